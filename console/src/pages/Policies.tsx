import { useState } from "react";
import { CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { api, can, type SimResult } from "../api";
import { useRole } from "../App";
import { ErrorNote, Figure, Page, num, pct } from "../ui";
import { PolicyConfigs } from "./PolicyEditor";

const KINDS: Array<[string, string]> = [
  ["static", "Static thresholds and a fixed cut point (the baseline)"],
  ["heuristic", "Heuristic: calibrated thresholds, the cut point picked for the network estimate"],
  ["linucb", "LinUCB contextual bandit"],
  ["thompson", "Thompson-sampling bandit"],
  ["dqn", "DQN: a small Q-network (reinforcement learning), learning online from each outcome"],
];
const SCENARIOS = ["steady", "varying", "outages"];
const COLORS = ["#0b5cad", "#b3541e"];

export function Policies() {
  const r = useRole();
  const [policy, setPolicy] = useState("linucb");
  const [scenario, setScenario] = useState("varying");
  const [requests, setRequests] = useState(1000);
  const [seed, setSeed] = useState(0);
  const [deadline, setDeadline] = useState(100);
  const [result, setResult] = useState<SimResult | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const run = async () => {
    setBusy(true);
    setError(null);
    try {
      setResult(await api.simulate({ policy, scenario, requests, seed, deadline_ms: deadline }));
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const merged =
    result?.runs[0]?.series.map((p, i) => {
      const row: Record<string, number> = { request: p.request };
      for (const run of result.runs) row[run.policy] = run.series[i]?.latency_ms ?? NaN;
      return row;
    }) ?? [];
  return (
    <Page title="Policies">
      <PolicyConfigs />
      <h2>Policy kinds</h2>
      <table>
        <caption>Decision policies the gateway and devices run (docs/policy.md)</caption>
        <thead>
          <tr>
            <th scope="col">Kind</th>
            <th scope="col">What it does</th>
          </tr>
        </thead>
        <tbody>
          {KINDS.map(([k, d]) => (
            <tr key={k}>
              <td>{k}</td>
              <td>{d}</td>
            </tr>
          ))}
        </tbody>
      </table>
      <p>
        Canary and shadow toggles, with their automatic-rollback guardrail, are on the <a href="#/deployments">Deployments</a> page.
      </p>
      <h2>Policy simulation</h2>
      {!can.simulate(r) ? (
        <p className="hint">Running simulations needs the Operator or Admin role.</p>
      ) : (
        <form
          className="grid-form"
          onSubmit={(e) => {
            e.preventDefault();
            void run();
          }}
        >
          <label htmlFor="sim-policy">Policy</label>
          <select id="sim-policy" value={policy} onChange={(e) => setPolicy(e.target.value)}>
            {KINDS.map(([k]) => (
              <option key={k}>{k}</option>
            ))}
          </select>
          <label htmlFor="sim-scenario">Network scenario</label>
          <select id="sim-scenario" value={scenario} onChange={(e) => setScenario(e.target.value)}>
            {SCENARIOS.map((s) => (
              <option key={s}>{s}</option>
            ))}
          </select>
          <label htmlFor="sim-requests">Requests</label>
          <input id="sim-requests" type="number" min={100} max={5000} value={requests} onChange={(e) => setRequests(Number(e.target.value))} />
          <label htmlFor="sim-seed">Seed</label>
          <input id="sim-seed" type="number" min={0} value={seed} onChange={(e) => setSeed(Number(e.target.value))} />
          <label htmlFor="sim-deadline">Deadline (ms)</label>
          <input id="sim-deadline" type="number" min={1} max={10000} value={deadline} onChange={(e) => setDeadline(Number(e.target.value))} />
          <span />
          <button type="submit" disabled={busy}>
            {busy ? "Simulating…" : "Run simulation"}
          </button>
        </form>
      )}
      <ErrorNote error={error} />
      {result && (
        <div data-testid="sim-result">
          <p role="status">
            Simulated {result.requests} requests of the synthetic trace ({result.scenario} network, seed {result.seed}).
          </p>
          <table>
            <caption>Simulation result</caption>
            <thead>
              <tr>
                <th scope="col">Policy</th>
                <th scope="col">Accuracy</th>
                <th scope="col">Mean latency</th>
                <th scope="col">p95 latency</th>
                <th scope="col">SLA breaches</th>
                <th scope="col">Offload rate</th>
                <th scope="col">Mean bytes</th>
              </tr>
            </thead>
            <tbody>
              {result.runs.map((run) => (
                <tr key={run.policy}>
                  <td>{run.policy}</td>
                  <td>{pct(run.summary.accuracy)}</td>
                  <td>{num(run.summary.latency_mean_ms, 1)} ms</td>
                  <td>{num(run.summary.latency_p95_ms, 1)} ms</td>
                  <td>{pct(run.summary.sla_breach_rate)}</td>
                  <td>{pct(run.summary.offload_rate)}</td>
                  <td>{num(run.summary.bytes_mean)}</td>
                </tr>
              ))}
            </tbody>
          </table>
          <Figure label="Mean latency (ms) per window of requests, simulated policy against the static baseline">
            <ResponsiveContainer width="100%" height={280}>
              <LineChart data={merged} margin={{ top: 8, right: 16, bottom: 8, left: 8 }}>
                <CartesianGrid strokeDasharray="3 3" />
                <XAxis dataKey="request" stroke="currentColor" />
                <YAxis stroke="currentColor" unit=" ms" />
                <Tooltip />
                <Legend />
                {result.runs.map((run, i) => (
                  <Line key={run.policy} type="monotone" dataKey={run.policy} stroke={COLORS[i % COLORS.length]} dot={false} isAnimationActive={false} />
                ))}
              </LineChart>
            </ResponsiveContainer>
          </Figure>
        </div>
      )}
    </Page>
  );
}
