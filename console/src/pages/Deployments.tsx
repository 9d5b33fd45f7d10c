import { useEffect, useState } from "react";
import { api, ApiError, can, type Rollout, type RolloutStats } from "../api";
import { useRole } from "../App";
import { ErrorNote, Page, num, pct, useLoad } from "../ui";

const STAGES = [0.05, 0.25, 0.5, 1.0];

export function Deployments() {
  const r = useRole();
  const { data: models, error: modelsError } = useLoad(() => api.models());
  const { data: stats } = useLoad(() => api.stats(), 5000);
  const { data: ready } = useLoad(() => api.ready(), 5000);
  const [name, setName] = useState("");
  const [rollout, setRollout] = useState<Rollout | null>(null);
  const [rstats, setRstats] = useState<RolloutStats | null>(null);
  const [stable, setStable] = useState("");
  const [candidate, setCandidate] = useState("");
  const [fraction, setFraction] = useState(10);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState("");
  const list = (models?.models ?? []).filter((m) => (m.versions ?? []).length > 1);
  const versions = list.find((m) => m.name === name)?.versions?.map((v) => v.version) ?? [];

  useEffect(() => {
    if (!name && list.length > 0) setName(list[0].name);
  }, [list, name]);
  const refresh = async (model = name) => {
    if (!model) return;
    try {
      const got = await api.rollout(model);
      setRollout(got.rollout);
      setRstats(got.stats ?? null);
      setError(null);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) {
        setRollout(null);
        setRstats(null);
      } else setError(e);
    }
  };
  useEffect(() => {
    void refresh(name);
    const id = setInterval(() => void refresh(name), 5000);
    return () => clearInterval(id);
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [name]);
  useEffect(() => {
    if (versions.length > 1) {
      setStable(rollout?.stableVersion ?? versions[0]);
      setCandidate(rollout?.candidateVersion || versions[versions.length - 1]);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [name, versions.length, rollout?.stableVersion, rollout?.candidateVersion]);

  const apply = async (mode: string, share: number, state?: string, what?: string, pin?: string) => {
    try {
      const body: Rollout = {
        modelName: name,
        stableVersion: pin ?? stable,
        candidateVersion: mode === "ROLLOUT_MODE_NONE" ? "" : candidate,
        mode,
        trafficFraction: share,
        rollback: { maxErrorRate: 0.2, minRequests: 20 },
      };
      if (state) body.state = state;
      const got = await api.setRollout(body);
      setRollout(got.rollout);
      setStatus(what ?? "Rollout updated.");
      setError(null);
      await refresh();
    } catch (e) {
      setError(e);
    }
  };
  const versionOf = (model: string, version: string) =>
    models?.models?.find((m) => m.name === model)?.versions?.find((v) => v.version === version);
  const pinned = (v: string | undefined) => {
    const sha = v ? versionOf(name, v)?.manifestSha256 : "";
    return sha ? `version ${v} (artifact ${sha.slice(0, 12)})` : `version ${v ?? stable}`;
  };
  const mode = rollout?.mode ?? "ROLLOUT_MODE_NONE";
  const active = rollout?.state === "ROLLOUT_STATE_ACTIVE" && mode !== "ROLLOUT_MODE_NONE";
  const writer = can.rollout(r);
  return (
    <Page title="Deployments">
      <ErrorNote error={modelsError || error} />
      {list.length === 0 && <p>No model has two served versions to roll out between.</p>}
      {list.length > 0 && (
        <>
          <label htmlFor="dep-model">Model</label>{" "}
          <select id="dep-model" value={name} onChange={(e) => setName(e.target.value)}>
            {list.map((m) => (
              <option key={m.name}>{m.name}</option>
            ))}
          </select>
          <h2>Current rollout</h2>
          <dl className="stats" data-testid="rollout">
            <div className="stat">
              <dt>Mode</dt>
              <dd data-testid="rollout-mode">{mode.replace("ROLLOUT_MODE_", "").toLowerCase()}</dd>
            </div>
            <div className="stat">
              <dt>State</dt>
              <dd data-testid="rollout-state">{(rollout?.state ?? "none").replace("ROLLOUT_STATE_", "").toLowerCase()}</dd>
            </div>
            <div className="stat">
              <dt>Stable (last known good)</dt>
              <dd data-testid="rollout-stable">{rollout?.stableVersion ?? "–"}</dd>
            </div>
            <div className="stat">
              <dt>Candidate</dt>
              <dd>{rollout?.candidateVersion || "–"}</dd>
            </div>
            <div className="stat">
              <dt>Traffic to candidate</dt>
              <dd data-testid="rollout-fraction">{active ? pct(rollout?.trafficFraction ?? 0) : "0.0 %"}</dd>
            </div>
            <div className="stat">
              <dt>Candidate requests (errors)</dt>
              <dd data-testid="rollout-candidate-requests">
                {rstats?.candidateRequests ?? "0"} ({rstats?.candidateErrors ?? "0"})
              </dd>
            </div>
            <div className="stat">
              <dt>Shadow comparisons (agreement)</dt>
              <dd>
                {rstats?.shadowComparisons ?? "0"} ({pct(rstats?.shadowAgreement ?? 0)})
              </dd>
            </div>
          </dl>
          {status && (
            <p role="status" data-testid="deploy-status">
              {status}
            </p>
          )}
          {writer ? (
            <>
              <h2>Change the rollout</h2>
              <div className="inline">
                <label htmlFor="dep-stable">Stable version</label>{" "}
                <select id="dep-stable" value={stable} onChange={(e) => setStable(e.target.value)}>
                  {versions.map((v) => (
                    <option key={v}>{v}</option>
                  ))}
                </select>{" "}
                <label htmlFor="dep-candidate">Candidate version</label>{" "}
                <select id="dep-candidate" value={candidate} onChange={(e) => setCandidate(e.target.value)}>
                  {versions.map((v) => (
                    <option key={v}>{v}</option>
                  ))}
                </select>
              </div>
              <p>Guardrail: the gateway rolls back by itself when the candidate's error rate passes 20 % over 20 requests.</p>
              <div role="group" aria-label="Canary stages">
                {STAGES.map((s) => (
                  <button key={s} type="button" onClick={() => apply("ROLLOUT_MODE_CANARY", s, undefined, `Canary at ${s * 100} %.`)}>
                    Canary {s * 100} %
                  </button>
                ))}
              </div>
              <form
                className="inline"
                onSubmit={(e) => {
                  e.preventDefault();
                  void apply("ROLLOUT_MODE_CANARY", fraction / 100, undefined, `Canary at ${fraction} %.`);
                }}
              >
                <label htmlFor="dep-fraction">Custom canary share (%)</label>{" "}
                <input
                  id="dep-fraction"
                  type="number"
                  min={0}
                  max={100}
                  value={fraction}
                  onChange={(e) => setFraction(Math.min(100, Math.max(0, Number(e.target.value))))}
                />{" "}
                <button type="submit">Set canary</button>
              </form>
              <p>
                <input
                  type="checkbox"
                  id="dep-shadow"
                  checked={mode === "ROLLOUT_MODE_SHADOW" && active}
                  onChange={(e) =>
                    void (e.target.checked
                      ? apply("ROLLOUT_MODE_SHADOW", 1.0, undefined, "Shadow on: the candidate computes copies of every request.")
                      : apply("ROLLOUT_MODE_NONE", 0, undefined, "Shadow off."))
                  }
                />{" "}
                <label htmlFor="dep-shadow">Shadow the candidate (copies compared, never answered)</label>
              </p>
              <button type="button" onClick={() => apply("ROLLOUT_MODE_CANARY", 1.0, "ROLLOUT_STATE_PROMOTED", "Candidate promoted.")}>
                Promote candidate
              </button>{" "}
              <button
                type="button"
                className="danger"
                onClick={() =>
                  apply(
                    "ROLLOUT_MODE_NONE",
                    0,
                    undefined,
                    `Rolled back: all traffic pinned to ${pinned(rollout?.stableVersion)}.`,
                    rollout?.stableVersion,
                  )
                }
                disabled={!rollout}
              >
                Roll back to last known good
              </button>
            </>
          ) : (
            <p className="hint">Changing rollouts needs the Operator or Admin role.</p>
          )}
        </>
      )}
      <h2>Model versions on this gateway</h2>
      <p data-testid="gateway-health">Gateway readiness: {ready === null ? "…" : ready ? "ready" : "NOT ready"}</p>
      <table>
        <caption>Served versions and their inference counts</caption>
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">Version</th>
            <th scope="col">State</th>
            <th scope="col">Artifact</th>
            <th scope="col">Inferences</th>
            <th scope="col">Failures</th>
          </tr>
        </thead>
        <tbody>
          {(stats?.model_stats ?? []).map((s) => (
            <tr key={`${s.name}/${s.version}`}>
              <td>{s.name}</td>
              <td>{s.version}</td>
              <td>{versionOf(s.name, s.version)?.state?.replace("VERSION_STATE_", "").toLowerCase() ?? "–"}</td>
              <td>
                <code>{versionOf(s.name, s.version)?.manifestSha256?.slice(0, 12) ?? "–"}</code>
              </td>
              <td>{num(s.inference_count ?? 0)}</td>
              <td>{num(s.inference_stats?.fail?.count ?? 0)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </Page>
  );
}
