import { useEffect, useRef, useState } from "react";
import { CartesianGrid, Legend, Line, LineChart, ResponsiveContainer, Tooltip, XAxis, YAxis } from "recharts";
import { api } from "../api";
import { ErrorNote, Figure, Page, ratio } from "../ui";

interface Point {
  t: string;
  rps: number;
  sla: number;
  okRate: number;
  accuracy: number | null;
  costPer1000: number;
  driftPsi: number;
}

const INTERVAL_MS = 3000;
const KEEP = 200;

// Samples the gateway's summary every few seconds while the page is open (the gateway keeps
// counters, not history; long-term history is Prometheus's, see docs/observability.md).
export function Monitoring() {
  const [points, setPoints] = useState<Point[]>([]);
  const [error, setError] = useState<unknown>(null);
  const last = useRef<{ at: number; total: number } | null>(null);
  useEffect(() => {
    const sample = () => {
      api
        .summary(100)
        .then((s) => {
          const now = Date.now();
          const prev = last.current;
          last.current = { at: now, total: s.requests.total };
          const rps = prev ? (s.requests.total - prev.total) / ((now - prev.at) / 1000) : 0;
          const drift = s.drift.reduce((a, d) => Math.max(a, d.psi), 0);
          setPoints((p) =>
            [
              ...p,
              {
                t: new Date(now).toLocaleTimeString(),
                rps,
                sla: ratio(s.sla.within, s.sla.finished) * 100 || 0,
                okRate: ratio(s.requests.ok, s.requests.total) * 100 || 0,
                accuracy: s.accuracy.expected !== null ? s.accuracy.expected * 100 : null,
                costPer1000: s.cost.per_1000,
                driftPsi: drift,
              },
            ].slice(-KEEP),
          );
          setError(null);
        })
        .catch(setError);
    };
    sample();
    const id = setInterval(sample, INTERVAL_MS);
    return () => clearInterval(id);
  }, []);
  const chart = (label: string, key: keyof Point, unit: string, color: string) => (
    <Figure label={label}>
      <ResponsiveContainer width="100%" height={200}>
        <LineChart data={points} margin={{ top: 8, right: 16, bottom: 8, left: 8 }}>
          <CartesianGrid strokeDasharray="3 3" />
          <XAxis dataKey="t" stroke="currentColor" />
          <YAxis stroke="currentColor" unit={unit} />
          <Tooltip />
          <Legend />
          <Line type="monotone" dataKey={key} name={label} stroke={color} dot={false} isAnimationActive={false} />
        </LineChart>
      </ResponsiveContainer>
    </Figure>
  );
  return (
    <Page title="Monitoring">
      <p>
        Sampled every {INTERVAL_MS / 1000} s from the gateway while this page is open ({points.length} samples).
        Expected accuracy is the mean calibrated confidence of the answers devices report (a calibrated confidence
        is the probability that the answer is right; no ground truth is recorded), as in the daily report.
      </p>
      <ErrorNote error={error} />
      <div className="charts">
        {chart("Requests per second", "rps", "", "#0b5cad")}
        {chart("SLA attainment (%)", "sla", " %", "#1d6b2f")}
        {chart("Successful requests (%)", "okRate", " %", "#6b3fa0")}
        {chart("Expected accuracy of device answers (%)", "accuracy", " %", "#0f6e6e")}
        {chart("Cost per 1,000 requests", "costPer1000", "", "#b3541e")}
        {chart("Largest drift PSI", "driftPsi", "", "#8a1538")}
      </div>
    </Page>
  );
}
