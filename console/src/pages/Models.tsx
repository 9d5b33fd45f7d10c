import { useEffect, useRef, useState } from "react";
import { api, can, type CutPoint, type Model, type ModelVersion, type RepositoryEntry } from "../api";
import { useRole } from "../App";
import { ErrorNote, Page, num, useLoad } from "../ui";

export interface Network {
  rttMs: number;
  mbps: number;
}

// Bytes of a cut point's activation under its smallest codec (what a device sends by default).
export function cutBytes(c: CutPoint): { codec: string; bytes: number } {
  const byCodec = Object.entries(c.activationBytesByCodec ?? {}).map(([codec, b]) => ({ codec, bytes: Number(b) }));
  if (byCodec.length === 0) return { codec: "float32", bytes: Number(c.activationBytesFloat32 ?? 0) };
  return byCodec.reduce((a, b) => (b.bytes < a.bytes ? b : a));
}

// One request's upload time: a round trip plus the bytes at the bandwidth.
export function transferMs(bytes: number, net: Network): number {
  return net.rttMs + (bytes * 8) / (net.mbps * 1e6) * 1000;
}

function NetworkInputs({ net, onChange, id }: { net: Network; onChange: (n: Network) => void; id: string }) {
  return (
    <fieldset className="inline">
      <legend>Network</legend>
      <label htmlFor={`${id}-rtt`}>RTT (ms)</label>{" "}
      <input
        id={`${id}-rtt`}
        type="number"
        min={0}
        value={net.rttMs}
        onChange={(e) => onChange({ ...net, rttMs: Math.max(0, Number(e.target.value)) })}
      />{" "}
      <label htmlFor={`${id}-bw`}>Bandwidth (Mbit/s)</label>{" "}
      <input
        id={`${id}-bw`}
        type="number"
        min={0.01}
        step="any"
        value={net.mbps}
        onChange={(e) => onChange({ ...net, mbps: Math.max(0.01, Number(e.target.value)) })}
      />
    </fieldset>
  );
}

function CutTable({ v, net, caption }: { v: ModelVersion; net: Network; caption: string }) {
  const cuts = v.cutPoints ?? [];
  if (cuts.length === 0) return <p>No cut points: this model runs whole in the cloud.</p>;
  return (
    <table>
      <caption>{caption}</caption>
      <thead>
        <tr>
          <th scope="col">Cut point</th>
          <th scope="col">Activation (float32)</th>
          <th scope="col">Smallest codec</th>
          <th scope="col">Bytes sent</th>
          <th scope="col">Est. transfer</th>
        </tr>
      </thead>
      <tbody>
        {cuts.map((c) => {
          const b = cutBytes(c);
          return (
            <tr key={c.name}>
              <td>{c.name}</td>
              <td>{num(Number(c.activationBytesFloat32 ?? 0))} B</td>
              <td>{b.codec}</td>
              <td>{num(b.bytes)} B</td>
              <td>{num(transferMs(b.bytes, net), 1)} ms</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}

function Wizard({ onDone }: { onDone: () => void }) {
  const [step, setStep] = useState(0);
  const [entries, setEntries] = useState<RepositoryEntry[] | null>(null);
  const [name, setName] = useState("");
  const [model, setModel] = useState<Model | null>(null);
  const [cut, setCut] = useState("");
  const [thresholds, setThresholds] = useState<Record<string, number>>({});
  const [net, setNet] = useState<Network>({ rttMs: 40, mbps: 10 });
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const [done, setDone] = useState("");
  const [serve, setServe] = useState(true);
  const [deviceClass, setDeviceClass] = useState("");
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    api.repositoryIndex().then(setEntries).catch(setError);
  }, []);
  useEffect(() => {
    heading.current?.focus();
  }, [step]);
  const names = Array.from(new Set((entries ?? []).map((e) => e.name))).sort();
  const stateOf = (n: string) => (entries ?? []).find((e) => e.name === n)?.state ?? "";
  const version = model?.versions?.find((v) => v.version === model.defaultVersion) ?? model?.versions?.[0];
  const titles = ["Choose a model", "Cut point", "Exit thresholds", "Review"];

  const loadAndNext = async () => {
    setBusy(true);
    setError(null);
    try {
      if (stateOf(name) !== "READY") await api.load(name);
      const m = (await api.model(name)).model;
      setModel(m);
      const v = m.versions?.find((x) => x.version === m.defaultVersion) ?? m.versions?.[0];
      setThresholds(Object.fromEntries((v?.exits ?? []).map((e) => [e.name, e.threshold ?? 0])));
      setCut(v?.cutPoints?.[0]?.name ?? "");
      setStep(1);
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  const config = {
    model: name,
    version: version?.version,
    cut_point: cut || null,
    exit_thresholds: thresholds,
  };
  const chosenCut = version?.cutPoints?.find((c) => c.name === cut);
  // Store the choice where devices read it: the device class's served policy, pinned to the cut
  // point (static) with these exit thresholds; the gateway pushes it to the class's devices.
  const finish = async () => {
    setBusy(true);
    setError(null);
    try {
      let served = "";
      if (serve && chosenCut) {
        const res = await api.wizardServe({
          device_class: deviceClass.trim(),
          kind: "static",
          thresholds,
          params: { cut_point: chosenCut.name, codec: cutBytes(chosenCut).codec === "float32" ? "" : cutBytes(chosenCut).codec },
        });
        served = ` Devices of ${res.device_class ? `class ${res.device_class}` : "every class without its own policy"} now run policy version ${res.policy_version}.`;
      }
      setDone(`${name} ${version?.version ?? ""} added.${served}`);
      onDone();
    } catch (e) {
      setError(e);
    } finally {
      setBusy(false);
    }
  };
  return (
    <div className="wizard" aria-labelledby="wizard-step">
      <h3 id="wizard-step" ref={heading} tabIndex={-1}>
        Step {step + 1} of 4: {titles[step]}
      </h3>
      <ErrorNote error={error} />
      {step === 0 && (
        <fieldset>
          <legend>Models in the gateway's repository</legend>
          {entries === null && <p>Loading…</p>}
          {names.map((n) => (
            <div key={n}>
              <input type="radio" id={`pick-${n}`} name="wizard-model" value={n} checked={name === n} onChange={() => setName(n)} />{" "}
              <label htmlFor={`pick-${n}`}>
                {n} <span className="hint">({stateOf(n) || "unknown"})</span>
              </label>
            </div>
          ))}
          <button type="button" disabled={!name || busy} onClick={loadAndNext}>
            {busy ? "Loading…" : stateOf(name) === "READY" ? "Next" : "Load and continue"}
          </button>
        </fieldset>
      )}
      {step === 1 && version && (
        <>
          <NetworkInputs net={net} onChange={setNet} id="wizard-net" />
          <CutTable v={version} net={net} caption={`Cut points of ${name} ${version.version} (profile)`} />
          <fieldset>
            <legend>Where the device hands over to the cloud</legend>
            {(version.cutPoints ?? []).map((c) => (
              <div key={c.name}>
                <input type="radio" id={`cut-${c.name}`} name="wizard-cut" checked={cut === c.name} onChange={() => setCut(c.name)} />{" "}
                <label htmlFor={`cut-${c.name}`}>
                  {c.name}: {num(cutBytes(c).bytes)} B, about {num(transferMs(cutBytes(c).bytes, net), 1)} ms
                </label>
              </div>
            ))}
            <div>
              <input type="radio" id="cut-none" name="wizard-cut" checked={cut === ""} onChange={() => setCut("")} />{" "}
              <label htmlFor="cut-none">No split (the cloud runs the whole model)</label>
            </div>
          </fieldset>
          <button type="button" onClick={() => setStep(0)}>
            Back
          </button>{" "}
          <button type="button" onClick={() => setStep(2)}>
            Next
          </button>
        </>
      )}
      {step === 2 && version && (
        <>
          <p>Defaults are the calibrated thresholds of the model's exits (its calibration data).</p>
          {(version.exits ?? []).length === 0 && <p>This model has no early exits.</p>}
          {(version.exits ?? []).map((e) => (
            <div key={e.name}>
              <label htmlFor={`thr-${e.name}`}>Confidence threshold of exit {e.name}</label>{" "}
              <input
                id={`thr-${e.name}`}
                type="number"
                min={0}
                max={1}
                step={0.01}
                value={thresholds[e.name] ?? 0}
                onChange={(ev) => setThresholds({ ...thresholds, [e.name]: Math.min(1, Math.max(0, Number(ev.target.value))) })}
              />
            </div>
          ))}
          <button type="button" onClick={() => setStep(1)}>
            Back
          </button>{" "}
          <button type="button" onClick={() => setStep(3)}>
            Next
          </button>
        </>
      )}
      {step === 3 && (
        <>
          <p>
            {name} {version?.version} is served by the gateway. The configuration devices run with it:
          </p>
          <pre data-testid="wizard-config">{JSON.stringify(config, null, 2)}</pre>
          {chosenCut ? (
            <fieldset>
              <legend>Serve it to devices</legend>
              <input type="checkbox" id="wizard-serve" checked={serve} onChange={(e) => setServe(e.target.checked)} />{" "}
              <label htmlFor="wizard-serve">
                Serve this cut point and these thresholds as the policy of a device class (pushed to its devices)
              </label>
              <div>
                <label htmlFor="wizard-class">Device class (empty: every class without its own policy)</label>{" "}
                <input
                  id="wizard-class"
                  type="text"
                  maxLength={64}
                  disabled={!serve}
                  value={deviceClass}
                  onChange={(e) => setDeviceClass(e.target.value)}
                />
              </div>
            </fieldset>
          ) : (
            <p>Without a cut point there is nothing to pin on devices; give them the thresholds above yourself.</p>
          )}
          <button type="button" onClick={() => setStep(2)}>
            Back
          </button>{" "}
          <button type="button" disabled={busy} onClick={finish}>
            Finish
          </button>
          {done && (
            <p role="status" data-testid="wizard-done">
              {done}
            </p>
          )}
        </>
      )}
    </div>
  );
}

export function Models() {
  const r = useRole();
  const { data, error, reload } = useLoad(() => api.models());
  const [net, setNet] = useState<Network>({ rttMs: 40, mbps: 10 });
  const [wizard, setWizard] = useState(false);
  const models = data?.models ?? [];
  return (
    <Page title="Models">
      <ErrorNote error={error} />
      {can.loadModels(r) ? (
        <button type="button" aria-expanded={wizard} onClick={() => setWizard(!wizard)}>
          {wizard ? "Close the add-model wizard" : "Add a model"}
        </button>
      ) : (
        <p className="hint">Adding models needs the Admin role.</p>
      )}
      {wizard && <Wizard onDone={reload} />}
      <h2>Registry</h2>
      <table>
        <caption>Served models</caption>
        <thead>
          <tr>
            <th scope="col">Model</th>
            <th scope="col">Versions</th>
            <th scope="col">Default</th>
            <th scope="col">Cut points</th>
            <th scope="col">Exits (threshold)</th>
            <th scope="col">Artifact (manifest SHA-256)</th>
          </tr>
        </thead>
        <tbody>
          {models.map((m) => {
            const v = m.versions?.find((x) => x.version === m.defaultVersion) ?? m.versions?.[0];
            return (
              <tr key={m.name}>
                <td>{m.name}</td>
                <td>{(m.versions ?? []).map((x) => x.version).join(", ")}</td>
                <td>{m.defaultVersion}</td>
                <td>{(v?.cutPoints ?? []).map((c) => c.name).join(", ") || "–"}</td>
                <td>{(v?.exits ?? []).map((e) => `${e.name} (${num(e.threshold ?? 0, 2)})`).join(", ") || "–"}</td>
                <td>
                  <code title={v?.manifestSha256}>{v?.manifestSha256 ? `${v.manifestSha256.slice(0, 12)}…` : "–"}</code>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
      <h2>Activation bytes and transfer time per cut point</h2>
      <NetworkInputs net={net} onChange={setNet} id="preview-net" />
      {models
        .filter((m) => (m.versions ?? []).some((v) => (v.cutPoints ?? []).length > 0))
        .map((m) => {
          const v = m.versions?.find((x) => x.version === m.defaultVersion) ?? m.versions![0];
          return <CutTable key={m.name} v={v} net={net} caption={`${m.name} ${v.version}`} />;
        })}
    </Page>
  );
}
