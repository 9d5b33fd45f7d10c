// The console's only way to the gateway: its public REST API (same origin).
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

let token = sessionStorage.getItem("aiml021.token") ?? "";

export function setToken(value: string): void {
  token = value;
  sessionStorage.setItem("aiml021.token", value);
}

export function hasToken(): boolean {
  return token !== "";
}

async function call<T>(method: string, path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  const data = text ? JSON.parse(text) : {};
  if (!res.ok) {
    throw new ApiError(res.status, data.code ?? String(res.status), data.message ?? data.error ?? text);
  }
  return data as T;
}

export interface TensorInfo {
  name: string;
  datatype?: string;
  shape?: string[];
}

export interface ModelSummary {
  name: string;
  version?: string;
  versions?: string[];
  ready?: boolean;
  [key: string]: unknown;
}

export const api = {
  get: <T>(path: string) => call<T>("GET", path),
  post: <T>(path: string, body: unknown) => call<T>("POST", path, body),
  models: () => call<{ models?: ModelSummary[] }>("GET", "/v1/models"),
  model: (name: string) => call<Record<string, unknown>>("GET", `/v1/models/${encodeURIComponent(name)}`),
  live: () => call<Record<string, unknown>>("GET", "/v2/health/live"),
  stats: () => call<{ model_stats?: Array<Record<string, unknown>> }>("GET", "/v2/models/stats"),
};
