import { useState, type FormEvent } from "react";
import { api, can, claims, errorText, type ConsoleSettings } from "../api";
import { useRole } from "../App";
import { ErrorNote, Page, num, useLoad } from "../ui";

const onOff = (on: boolean) => (on ? "on" : "off");

// What the public API lets an operator change at runtime: their own organisation's budget
// (Admin, PUT /v1/console/budget). Everything else is shown with the reason it is not changeable
// here (docs/console.md).
function BudgetSection({ s, reload }: { s: ConsoleSettings; reload: () => void }) {
  const r = useRole();
  const b = s.budget;
  const [amount, setAmount] = useState(b.amount !== null ? String(b.amount) : "");
  const [status, setStatus] = useState("");
  const [error, setError] = useState("");
  const save = (e: FormEvent) => {
    e.preventDefault();
    setStatus("");
    setError("");
    api
      .setBudget(Number(amount))
      .then((res) => {
        setStatus(`Saved: organisation ${res.budget.org} may spend ${num(res.budget.amount ?? 0, 2)} per period.`);
        reload();
      })
      .catch((err) => setError(errorText(err)));
  };
  return (
    <>
      <h2>Budget</h2>
      <p data-testid="budget-current">
        {b.amount !== null
          ? `Organisation ${b.org}: ${num(b.spent ?? 0, 2)} spent of a budget of ${num(b.amount, 2)} per ${num((b.period_s ?? 0) / 3600, 1)} h.`
          : `No budget is set for organisation ${b.org}.`}
      </p>
      {!b.writable ? (
        <p>Budgets cannot be changed here: {b.note}.</p>
      ) : can.setBudget(r) ? (
        <form className="inline" onSubmit={save} aria-describedby="budget-help">
          <label htmlFor="budget-amount">Budget per period (price-table currency)</label>{" "}
          <input
            id="budget-amount"
            type="number"
            min={0}
            step="any"
            required
            value={amount}
            onChange={(e) => setAmount(e.target.value)}
          />{" "}
          <button type="submit">Save budget</button>
          <p id="budget-help" className="hint">
            Your own organisation only (the one your token names). The period and what was spent in it stay; the new
            amount applies at once to steering and to the budget alerts, on this gateway process until it restarts
            (put it in <code>accounting.budgets</code> to keep it). Audited.
          </p>
        </form>
      ) : (
        <p>Changing the budget needs the Admin role.</p>
      )}
      <p role="status" data-testid="budget-status">
        {status}
      </p>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
    </>
  );
}

export function Settings() {
  const r = useRole();
  const c = claims();
  const { data: s, error, reload } = useLoad(() => api.settings());
  const rows: Array<[string, boolean]> = [
    ["See models, rollouts, statistics and the overview", r !== ""],
    ["Start, change, promote and roll back rollouts; toggle shadow", can.rollout(r)],
    ["Run policy simulations", can.simulate(r)],
    ["Load models from the repository (add-model wizard)", can.loadModels(r)],
    ["Change your organisation's budget", can.setBudget(r)],
  ];
  return (
    <Page title="Settings">
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
      <p>
        Not changeable here: the certificate authority, token issuers and keys are what every call — this page's
        included — is checked against, so they change only in the gateway's settings file and with{" "}
        <code>aiml021 ca</code> / <code>aiml021 token</code> (docs/authz.md), never through a browser holding a
        token.
      </p>
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
      {s && <BudgetSection s={s} reload={reload} />}
      <h2>Privacy controls</h2>
      {s && (
        <table data-testid="privacy">
          <caption>Privacy controls of this gateway (read-only) and why they are not changeable here</caption>
          <thead>
            <tr>
              <th scope="col">Control</th>
              <th scope="col">State</th>
              <th scope="col">Why not changeable at runtime</th>
            </tr>
          </thead>
          <tbody>
            <tr>
              <td>Pseudonymous device and session ids</td>
              <td>{onOff(s.privacy.pseudonyms)}</td>
              <td>
                It is a secret key: it would have to pass through the browser, and a new key unlinks every pseudonym
                already stored (forget requests and privacy ledgers find them by it). Settings file or secret store.
              </td>
            </tr>
            <tr>
              <td>DLP scan and redaction</td>
              <td>
                {onOff(s.privacy.dlp)}
                {s.privacy.dlp && s.privacy.dlp_kinds.length > 0 ? ` (${s.privacy.dlp_kinds.join(", ")})` : ""}
              </td>
              <td>
                Switching it off would let personal data into the stores of every tenant on one token's say; each
                gateway process builds its scanner at start. A reviewed settings change, not a runtime switch.
              </td>
            </tr>
            <tr>
              <td>Encryption at rest (idempotency store, result cache)</td>
              <td>{onOff(s.privacy.sealed_at_rest)}</td>
              <td>
                Its key ring is a file (<code>aiml021 privacy keys</code>); stored values stay readable only with the
                keys that sealed them, so rotation is a deliberate key-ring operation, not an API call.
              </td>
            </tr>
          </tbody>
        </table>
      )}
      <h2>Alerts</h2>
      <p>
        Alert thresholds are Prometheus rules (<code>deploy/prometheus/rules</code>), evaluated by Prometheus, not by
        the gateway: the gateway cannot change them, so neither can this console (docs/observability.md). The budget
        alerts compare spend with the budget gauge, so a budget saved above moves them at once.
      </p>
    </Page>
  );
}
