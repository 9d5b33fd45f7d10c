import { api, can, claims } from "../api";
import { useRole } from "../App";
import { ErrorNote, Page, num, useLoad } from "../ui";

// Read-only: the public API exposes no settings writes (the gateway's settings file and
// `aiml021 token` / `aiml021 ca` are where they change; docs/gateway.md, docs/authz.md).
export function Settings() {
  const r = useRole();
  const c = claims();
  const { data: s, error } = useLoad(() => api.summary(100));
  const rows: Array<[string, boolean]> = [
    ["See models, rollouts, statistics and the overview", r !== ""],
    ["Start, change, promote and roll back rollouts; toggle shadow", can.rollout(r)],
    ["Run policy simulations", can.simulate(r)],
    ["Load models from the repository (add-model wizard)", can.loadModels(r)],
  ];
  return (
    <Page title="Settings">
      <p>
        This page is read-only: the gateway's public API does not change settings. Authentication, privacy controls,
        budgets and alerts are set in the gateway's settings file and with <code>aiml021 token</code> /{" "}
        <code>aiml021 ca</code> (see docs/gateway.md, docs/authz.md, docs/privacy.md, docs/observability.md).
      </p>
      <ErrorNote error={error} />
      <h2>Authentication</h2>
      <dl className="stats">
        <div className="stat">
          <dt>Transport</dt>
          <dd>mutual TLS 1.3 (your client certificate)</dd>
        </div>
        <div className="stat">
          <dt>Subject</dt>
          <dd>{c?.sub ?? "–"}</dd>
        </div>
        <div className="stat">
          <dt>Role</dt>
          <dd data-testid="settings-role">{r || "none"}</dd>
        </div>
        <div className="stat">
          <dt>Organisation</dt>
          <dd>{c?.org ?? "–"}</dd>
        </div>
        <div className="stat">
          <dt>Token expires</dt>
          <dd>{c?.exp ? new Date(c.exp * 1000).toISOString() : "–"}</dd>
        </div>
      </dl>
      <table>
        <caption>What your role may do here</caption>
        <thead>
          <tr>
            <th scope="col">Action</th>
            <th scope="col">Allowed</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(([what, ok]) => (
            <tr key={what}>
              <td>{what}</td>
              <td>{ok ? "yes" : "no"}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <h2>Budget</h2>
      {s && (
        <p>
          {s.cost.budget
            ? `Organisation ${s.cost.org}: ${num(s.cost.budget_spent ?? 0, 2)} spent of a budget of ${num(s.cost.budget, 2)} this period.`
            : `No budget is set for organisation ${s.cost.org}.`}
        </p>
      )}
      <h2>Privacy and alerts</h2>
      <p>
        Privacy controls (differential privacy on features, pseudonyms, forget, DLP, encryption at rest) and alert rules
        are gateway settings and Prometheus rules; the public API does not expose them, so this console shows none of
        their values.
      </p>
    </Page>
  );
}
