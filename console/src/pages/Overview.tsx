import { useState } from "react";
import { api, type Summary } from "../api";
import { ErrorNote, Page, Stat, num, pct, ratio, useLoad } from "../ui";

// Telemetry route labels (aiml021.common.v1.Route without its prefix, lower case).
const LOCAL = ["edge", "edge_fallback"];
const OFFLOAD = ["cloud"];
const CACHE = ["cache"];

function share(routes: Record<string, number>, names: string[]): number {
  const total = Object.values(routes).reduce((a, b) => a + b, 0);
  const part = Object.entries(routes)
    .filter(([k]) => names.includes(k))
    .reduce((a, [, v]) => a + v, 0);
  return ratio(part, total);
}

export function Heatmap({ s }: { s: Summary }) {
  const edges = s.latency_heatmap.bucket_upper_ms;
  const rows = s.latency_heatmap.regions;
  const max = Math.max(1, ...rows.flatMap((r) => r.counts));
  if (rows.length === 0) return <p>No requests yet.</p>;
  return (
    <div className="scroll" role="region" aria-label="Latency heatmap" tabIndex={0}>
      <table className="heatmap">
        <caption>Gateway latency by region and device class: requests per latency bucket</caption>
        <thead>
          <tr>
            <th scope="col">Region</th>
            <th scope="col">Device class</th>
            {edges.map((e, i) => (
              <th scope="col" key={i}>
                {e === null ? `> ${num(edges[i - 1] ?? 0)} ms` : `≤ ${num(e, e < 1 ? 1 : 0)} ms`}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r) => (
            <tr key={`${r.region}\u0000${r.device_class}`}>
              <th scope="row">{r.region || "unknown"}</th>
              <th scope="row">{r.device_class || "none (REST / KServe)"}</th>
              {r.counts.map((c, i) => (
                <td key={i} className="cell" data-level={Math.ceil((c / max) * 4)}>
                  {num(c)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

export function Overview() {
  const [deadline, setDeadline] = useState(100);
  const { data: s, error, reload } = useLoad(() => api.summary(deadline), 5000);
  return (
    <Page title="Overview">
      <form
        className="inline"
        onSubmit={(e) => {
          e.preventDefault();
          reload();
        }}
      >
        <label htmlFor="deadline">SLA deadline (ms)</label>{" "}
        <input
          id="deadline"
          type="number"
          min={1}
          max={60000}
          value={deadline}
          onChange={(e) => setDeadline(Number(e.target.value) || 100)}
        />{" "}
        <button type="submit">Refresh</button>
      </form>
      <ErrorNote error={error} />
      {s && (
        <>
          <dl className="stats" aria-label="Key figures">
            <Stat label="Requests" value={num(s.requests.total)} hint={`${pct(ratio(s.requests.ok, s.requests.total))} OK`} />
            <Stat
              label="SLA attainment"
              value={pct(ratio(s.sla.within, s.sla.finished))}
              hint={s.sla.bucket_ms !== null ? `within ${num(s.sla.bucket_ms, 1)} ms` : "no bucket below the deadline"}
            />
            <Stat label="Result-cache hit rate" value={pct(ratio(s.cache.hits, s.cache.hits + s.cache.misses))} />
            <Stat label="Offload rate (devices)" value={pct(share(s.device_routes, OFFLOAD))} />
            <Stat label="Local-exit rate (devices)" value={pct(share(s.device_routes, LOCAL))} />
            <Stat label="Cache answers (devices)" value={pct(share(s.device_routes, CACHE))} />
            <Stat
              label="Expected accuracy (devices)"
              value={s.accuracy.expected !== null ? pct(s.accuracy.expected) : "no answers yet"}
              hint={`mean calibrated confidence of ${num(s.accuracy.answers)} answers`}
            />
            <Stat label={`Cost per 1,000 requests (org ${s.cost.org} spend / all requests)`} value={num(s.cost.per_1000, 4)} />
            <Stat
              label="Budget spent"
              value={s.cost.budget ? pct(ratio(s.cost.budget_spent ?? 0, s.cost.budget)) : "no budget set"}
              hint={s.cost.budget ? `${num(s.cost.budget_spent ?? 0, 2)} of ${num(s.cost.budget, 2)}` : undefined}
            />
          </dl>
          <h2>Latency heatmap by region and device class</h2>
          <Heatmap s={s} />
          <h2>Device routes</h2>
          {Object.keys(s.device_routes).length === 0 ? (
            <p>No device telemetry yet.</p>
          ) : (
            <table>
              <caption>Telemetry events by route</caption>
              <thead>
                <tr>
                  <th scope="col">Route</th>
                  <th scope="col">Events</th>
                </tr>
              </thead>
              <tbody>
                {Object.entries(s.device_routes).map(([k, v]) => (
                  <tr key={k}>
                    <td>{k}</td>
                    <td>{num(v)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )}
        </>
      )}
    </Page>
  );
}
