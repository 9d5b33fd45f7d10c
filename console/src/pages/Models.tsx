import { useEffect, useState } from "react";
import { api, ApiError, type ModelSummary } from "../api";

export function Models() {
  const [models, setModels] = useState<ModelSummary[] | null>(null);
  const [error, setError] = useState<string>("");
  useEffect(() => {
    api
      .models()
      .then((r) => setModels(r.models ?? []))
      .catch((e: unknown) => setError(e instanceof ApiError ? `${e.status} ${e.message}` : String(e)));
  }, []);
  return (
    <section aria-labelledby="page-title">
      <h1 id="page-title">Models</h1>
      {error && (
        <p role="alert" className="error">
          {error}
        </p>
      )}
      {models === null && !error && <p aria-live="polite">Loading…</p>}
      {models && (
        <table>
          <caption>Registered models</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Version</th>
            </tr>
          </thead>
          <tbody>
            {models.map((m) => (
              <tr key={`${m.name}/${m.version ?? ""}`}>
                <td>{m.name}</td>
                <td>{m.version ?? (m.versions ?? []).join(", ")}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
