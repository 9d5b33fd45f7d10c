import { useCallback, useEffect, useRef, useState, type ReactNode } from "react";
import { errorText } from "./api";

export function Page({ title, children }: { title: string; children: ReactNode }) {
  useEffect(() => {
    document.title = `${title} · aiml021 console`;
  }, [title]);
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title">{title}</h1>
      {children}
    </section>
  );
}

export function ErrorNote({ error }: { error: unknown }) {
  if (!error) return null;
  return (
    <p role="alert" className="error">
      {errorText(error)}
    </p>
  );
}

export function Stat({ label, value, hint }: { label: string; value: string; hint?: string }) {
  return (
    <div className="stat">
      <dt>{label}</dt>
      <dd>
        {value}
        {hint && <span className="hint"> {hint}</span>}
      </dd>
    </div>
  );
}

export function Figure({ label, children }: { label: string; children: ReactNode }) {
  return (
    <figure className="chart">
      <figcaption>{label}</figcaption>
      <div role="img" aria-label={label}>
        {children}
      </div>
    </figure>
  );
}

export const pct = (x: number) => (Number.isFinite(x) ? `${(x * 100).toFixed(1)} %` : "–");
export const num = (x: number, digits = 0) => (Number.isFinite(x) ? x.toFixed(digits) : "–");
export const ratio = (a: number, b: number) => (b > 0 ? a / b : NaN);

// Load once, reload on demand (and every intervalMs when given), always with the latest `load`
// (it closes over the page's inputs, e.g. the overview's deadline).
export function useLoad<T>(load: () => Promise<T>, intervalMs?: number) {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const latest = useRef(load);
  latest.current = load;
  const reload = useCallback(() => {
    latest
      .current()
      .then((d) => {
        setData(d);
        setError(null);
      })
      .catch(setError);
  }, []);
  useEffect(() => {
    reload();
    if (!intervalMs) return;
    const id = setInterval(reload, intervalMs);
    return () => clearInterval(id);
  }, [reload, intervalMs]);
  return { data, error, reload };
}
