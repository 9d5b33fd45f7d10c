import { useState, type ReactNode } from "react";
import {
  api,
  can,
  type Experiment,
  type ParamValue,
  type Policies,
  type PolicyConfig,
  type ServedPolicy,
} from "../api";
import { useRole } from "../App";
import { ErrorNote, num, pct, useLoad } from "../ui";

// The served policy of each device class and A/B experiments, through /v1/policies (the gateway
// validates every field, pushes a PolicyUpdate to the devices concerned and audits the change).

const className = (c: string) => (c === "" ? "default (every class without its own)" : c);

function defaults(p: Policies, kind: string, base?: PolicyConfig): PolicyConfig {
  const spec = p.kinds[kind];
  const params: Record<string, ParamValue> = {};
  for (const [name, s] of Object.entries(spec?.params ?? {})) {
    const current = base?.kind === kind ? base.params[name] : undefined;
    params[name] = current ?? (s.type === "boolean" ? Boolean(s.default) : s.type === "string" ? "" : (s.default ?? 0));
  }
  const thresholds: Record<string, number> = {};
  if (spec?.thresholds) for (const e of p.exits) thresholds[e.name] = base?.thresholds[e.name] ?? e.threshold;
  return { kind, thresholds, params };
}

function describe(c: PolicyConfig): string {
  const thr = Object.entries(c.thresholds).map(([k, v]) => `${k} ${v}`);
  const params = Object.entries(c.params).map(([k, v]) => `${k} ${String(v)}`);
  return [thr.length ? `thresholds: ${thr.join(", ")}` : "", params.length ? `params: ${params.join(", ")}` : ""]
    .filter(Boolean)
    .join("; ");
}

// One configuration's fields: kind, per-exit thresholds (threshold kinds), bounded parameters.
function ConfigFields({ id, schema, value, onChange }: { id: string; schema: Policies; value: PolicyConfig; onChange: (c: PolicyConfig) => void }) {
  const spec = schema.kinds[value.kind];
  const [lo, hi] = schema.threshold_range;
  return (
    <>
      <label htmlFor={`${id}-kind`}>Kind</label>
      <select id={`${id}-kind`} value={value.kind} onChange={(e) => onChange(defaults(schema, e.target.value, value))}>
        {Object.keys(schema.kinds).map((k) => (
          <option key={k}>{k}</option>
        ))}
      </select>
      {spec?.thresholds &&
        schema.exits.map((e) => (
          <Field key={e.name} id={`${id}-thr-${e.name}`} label={`Threshold of exit ${e.name}`}>
            <input
              id={`${id}-thr-${e.name}`}
              type="number"
              step="any"
              min={lo}
              max={hi}
              value={value.thresholds[e.name] ?? e.threshold}
              onChange={(ev) => onChange({ ...value, thresholds: { ...value.thresholds, [e.name]: Number(ev.target.value) } })}
            />
          </Field>
        ))}
      {Object.entries(spec?.params ?? {}).map(([name, p]) => {
        const fid = `${id}-param-${name}`;
        const label = p.help ? `${name} (${p.help})` : name;
        const set = (v: ParamValue) => onChange({ ...value, params: { ...value.params, [name]: v } });
        if (p.type === "boolean")
          return (
            <Field key={name} id={fid} label={label}>
              <input id={fid} type="checkbox" checked={Boolean(value.params[name])} onChange={(e) => set(e.target.checked)} />
            </Field>
          );
        if (p.type === "string") {
          const cuts = schema.cut_points;
          const options = name === "cut_point" ? cuts.map((c) => c.name) : (cuts.find((c) => c.name === value.params.cut_point)?.codecs ?? []);
          return (
            <Field key={name} id={fid} label={name === "cut_point" ? "Cut point (none: never offload)" : "Codec"}>
              <select id={fid} value={String(value.params[name] ?? "")} onChange={(e) => set(e.target.value)}>
                <option value="">none</option>
                {options.map((o) => (
                  <option key={o}>{o}</option>
                ))}
              </select>
            </Field>
          );
        }
        return (
          <Field key={name} id={fid} label={label}>
            <input
              id={fid}
              type="number"
              step={p.type === "integer" ? 1 : "any"}
              min={p.minimum}
              max={p.maximum}
              value={Number(value.params[name] ?? p.default ?? 0)}
              onChange={(e) => set(Number(e.target.value))}
            />
          </Field>
        );
      })}
    </>
  );
}

function Field({ id, label, children }: { id: string; label: string; children: ReactNode }) {
  return (
    <>
      <label htmlFor={id}>{label}</label>
      {children}
    </>
  );
}

function ServedTable({ classes }: { classes: ServedPolicy[] }) {
  return (
    <table data-testid="served-policies">
      <caption>Served policy per device class (pushed to devices as PolicyUpdate)</caption>
      <thead>
        <tr>
          <th scope="col">Device class</th>
          <th scope="col">Kind</th>
          <th scope="col">Version</th>
          <th scope="col">Configuration</th>
          <th scope="col">Experiment</th>
        </tr>
      </thead>
      <tbody>
        {classes.map((c) => (
          <tr key={c.device_class} data-class={c.device_class}>
            <td>{className(c.device_class)}</td>
            <td>{c.kind}</td>
            <td>{c.policy_version}</td>
            <td>{describe(c)}</td>
            <td>{c.experiment ?? "–"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Editor({ schema, onDone }: { schema: Policies; onDone: () => void }) {
  const served = (cls: string) => schema.classes.find((c) => c.device_class === cls) ?? schema.classes.find((c) => c.device_class === "");
  const [cls, setCls] = useState("");
  const [config, setConfig] = useState<PolicyConfig>(() => {
    const s = served("");
    return s ? defaults(schema, s.kind, s) : defaults(schema, "heuristic");
  });
  const [status, setStatus] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const pick = (value: string) => {
    setCls(value);
    const s = served(value);
    if (s) setConfig(defaults(schema, s.kind, s));
  };
  const submit = async () => {
    setBusy(true);
    setError(null);
    setStatus("");
    try {
      const own = schema.classes.find((c) => c.device_class === cls);
      const out = await api.setPolicy({ device_class: cls, ...config, expected_version: own?.policy_version ?? 0 });
      setStatus(`Published ${out.kind} version ${out.policy_version} to device class ${className(out.device_class)}.`);
      onDone();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <form
      className="grid-form"
      aria-label="Change a device class's policy"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      <label htmlFor="pol-class">Device class (empty: default)</label>
      <input id="pol-class" list="pol-classes" value={cls} maxLength={64} onChange={(e) => pick(e.target.value)} />
      <datalist id="pol-classes">
        {schema.classes.map((c) => (
          <option key={c.device_class} value={c.device_class} />
        ))}
      </datalist>
      <ConfigFields id="pol" schema={schema} value={config} onChange={setConfig} />
      <span />
      <button type="submit" disabled={busy}>
        {busy ? "Publishing…" : "Publish to devices"}
      </button>
      <span />
      <span role="status" data-testid="policy-status">
        {status}
      </span>
      <ErrorNote error={error} />
    </form>
  );
}

function ExperimentForm({ schema, onDone }: { schema: Policies; onDone: () => void }) {
  const [name, setName] = useState("");
  const [cls, setCls] = useState("");
  const [treatment, setTreatment] = useState<PolicyConfig>(() => defaults(schema, "linucb"));
  const [split, setSplit] = useState(50);
  const [minAccuracy, setMinAccuracy] = useState(0);
  const [maxBreach, setMaxBreach] = useState(100);
  const [minRequests, setMinRequests] = useState(200);
  const [status, setStatus] = useState("");
  const [error, setError] = useState<unknown>(null);
  const submit = async () => {
    setError(null);
    setStatus("");
    try {
      const out = await api.createExperiment({
        name,
        device_class: cls,
        treatment,
        split: split / 100,
        guardrail: { min_accuracy: minAccuracy / 100, max_breach_rate: maxBreach / 100, min_requests: minRequests },
      });
      setStatus(`Experiment ${out.name} started on device class ${className(out.device_class)}.`);
      onDone();
    } catch (e) {
      setError(e);
    }
  };
  return (
    <form
      className="grid-form"
      aria-label="Start an A/B experiment"
      onSubmit={(e) => {
        e.preventDefault();
        void submit();
      }}
    >
      <label htmlFor="exp-name">Experiment name</label>
      <input id="exp-name" required maxLength={64} pattern="[A-Za-z0-9][A-Za-z0-9._\-]*" value={name} onChange={(e) => setName(e.target.value)} />
      <label htmlFor="exp-class">Device class (empty: default)</label>
      <input id="exp-class" maxLength={64} value={cls} onChange={(e) => setCls(e.target.value)} />
      <label htmlFor="exp-split">Treatment share (%)</label>
      <input id="exp-split" type="number" min={1} max={99} value={split} onChange={(e) => setSplit(Number(e.target.value))} />
      <ConfigFields id="exp" schema={schema} value={treatment} onChange={setTreatment} />
      <label htmlFor="exp-min-acc">Guardrail: minimum accuracy (%)</label>
      <input id="exp-min-acc" type="number" min={0} max={100} value={minAccuracy} onChange={(e) => setMinAccuracy(Number(e.target.value))} />
      <label htmlFor="exp-max-breach">Guardrail: maximum SLA breaches (%)</label>
      <input id="exp-max-breach" type="number" min={0} max={100} value={maxBreach} onChange={(e) => setMaxBreach(Number(e.target.value))} />
      <label htmlFor="exp-min-req">Guardrail: after requests</label>
      <input id="exp-min-req" type="number" min={1} max={1000000} value={minRequests} onChange={(e) => setMinRequests(Number(e.target.value))} />
      <span />
      <button type="submit">Start experiment</button>
      <span />
      <span role="status" data-testid="experiment-status">
        {status}
      </span>
      <ErrorNote error={error} />
    </form>
  );
}

const maybe = (x: number | null, f: (v: number) => string) => (x === null ? "–" : f(x));

function ExperimentTable({ experiments, canStop, onDone }: { experiments: Experiment[]; canStop: boolean; onDone: () => void }) {
  const [error, setError] = useState<unknown>(null);
  const stop = async (name: string) => {
    setError(null);
    try {
      await api.stopExperiment(name);
      onDone();
    } catch (e) {
      setError(e);
    }
  };
  if (!experiments.length) return <p>No experiments yet.</p>;
  return (
    <>
      <ErrorNote error={error} />
      <table data-testid="experiments">
        <caption>A/B experiments and their per-arm results (outcomes reported through PolicyService)</caption>
        <thead>
          <tr>
            <th scope="col">Experiment</th>
            <th scope="col">Arm</th>
            <th scope="col">Policy</th>
            <th scope="col">Share</th>
            <th scope="col">Requests</th>
            <th scope="col">Accuracy</th>
            <th scope="col">SLA breaches</th>
            <th scope="col">Mean latency</th>
            <th scope="col">Mean cost</th>
          </tr>
        </thead>
        <tbody>
          {experiments.flatMap((x) =>
            (["control", "treatment"] as const).map((arm, i) => {
              const a = x.arms[arm];
              const r = a.results;
              return (
                <tr key={`${x.name}/${arm}`} data-experiment={x.name} data-arm={arm}>
                  {i === 0 && (
                    <th scope="rowgroup" rowSpan={2}>
                      {x.name} ({className(x.device_class)}) —{" "}
                      <span data-testid={`experiment-state-${x.name}`}>{x.state}</span>
                      {x.reason && <span className="hint"> {x.reason}</span>}
                      {canStop && x.state === "running" && (
                        <>
                          {" "}
                          <button type="button" className="danger" aria-label={`Stop experiment ${x.name}`} onClick={() => void stop(x.name)}>
                            Stop
                          </button>
                        </>
                      )}
                    </th>
                  )}
                  <td>{arm}</td>
                  <td>
                    {a.kind} v{a.policy_version}
                    <span className="hint"> {describe(a)}</span>
                  </td>
                  <td>{pct(a.share)}</td>
                  <td data-testid="arm-requests">{r.requests}</td>
                  <td>{maybe(r.accuracy, pct)}</td>
                  <td>{maybe(r.breach_rate, pct)}</td>
                  <td>{maybe(r.mean_latency_ms, (v) => `${num(v, 1)} ms`)}</td>
                  <td>{maybe(r.mean_cost, (v) => num(v, 3))}</td>
                </tr>
              );
            }),
          )}
        </tbody>
      </table>
    </>
  );
}

export function PolicyConfigs() {
  const r = useRole();
  const served = useLoad(api.policies);
  const experiments = useLoad(api.experiments, 5000);
  const reload = () => {
    served.reload();
    experiments.reload();
  };
  const schema = served.data;
  return (
    <>
      <h2>Served policies</h2>
      <ErrorNote error={served.error} />
      {schema && <ServedTable classes={schema.classes} />}
      {!can.policies(r) ? (
        <p className="hint">Changing policies and experiments needs the Operator or Admin role.</p>
      ) : (
        schema && (
          <>
            <h3>Change a device class's policy</h3>
            <p className="hint">
              Devices of the class receive the new version on their session at once; a learned kind starts untrained.
            </p>
            <Editor schema={schema} onDone={reload} />
          </>
        )
      )}
      <h2>A/B experiments</h2>
      <p className="hint">
        A share of the class's devices (fixed by a hash of the device id) runs the treatment, the rest the class's policy. Results
        count the outcomes reported for decisions of those devices; the guardrail ends an experiment whose treatment falls below it.
      </p>
      <ErrorNote error={experiments.error} />
      {can.policies(r) && schema && <ExperimentForm schema={schema} onDone={reload} />}
      {experiments.data && <ExperimentTable experiments={experiments.data.experiments} canStop={can.policies(r)} onDone={reload} />}
    </>
  );
}
