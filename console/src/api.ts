import type { JsonValue } from "@bufbuild/protobuf";

// The console's only way to the gateway: its public REST API (same origin, over the operator's
// mTLS connection), with the operator's bearer token on every call.
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

export type Role = "Admin" | "Operator" | "Observer" | "Service" | "Device" | "";

let token = sessionStorage.getItem("aiml021.token") ?? "";

export function setToken(value: string): void {
  token = value.trim();
  if (token) sessionStorage.setItem("aiml021.token", token);
  else sessionStorage.removeItem("aiml021.token");
}

export function getToken(): string {
  return token;
}

export interface Claims {
  sub?: string;
  role?: string;
  org?: string;
  exp?: number;
}

// The token's claims, read for display only: the gateway verifies the token on every call and
// its authorization table decides; the console merely hides what the role may not do.
export function claims(value: string = token): Claims | null {
  const parts = value.split(".");
  if (parts.length !== 3) return null;
  try {
    const json = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
    const parsed: unknown = JSON.parse(json);
    return typeof parsed === "object" && parsed !== null ? (parsed as Claims) : null;
  } catch {
    return null;
  }
}

export function role(): Role {
  const r = claims()?.role ?? "";
  return (["Admin", "Operator", "Observer", "Service", "Device"].includes(r) ? r : "") as Role;
}

export const can = {
  loadModels: (r: Role) => r === "Admin",
  rollout: (r: Role) => r === "Admin" || r === "Operator",
  simulate: (r: Role) => r === "Admin" || r === "Operator",
  setBudget: (r: Role) => r === "Admin",
  policies: (r: Role) => r === "Admin" || r === "Operator",
};

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
  let data: Record<string, unknown> = {};
  try {
    data = text ? (JSON.parse(text) as Record<string, unknown>) : {};
  } catch {
    data = { message: text };
  }
  if (!res.ok) {
    const message = String(data.message ?? data.error ?? text);
    throw new ApiError(res.status, String(data.code ?? res.status), message);
  }
  return data as T;
}

export function errorText(e: unknown): string {
  return e instanceof ApiError ? `${e.status} ${e.code}: ${e.message}` : String(e);
}

// proto3 JSON of aiml021.registry.v1 (64-bit integers are strings).
export interface CutPoint {
  name: string;
  index?: number;
  shape?: string[];
  activationBytesFloat32?: string;
  activationBytesByCodec?: Record<string, string>;
  headLatency?: string;
  tailLatency?: string;
}
export interface Exit {
  name: string;
  index?: number;
  temperature?: number;
  threshold?: number;
}
export interface ModelVersion {
  version: string;
  state?: string;
  cutPoints?: CutPoint[];
  exits?: Exit[];
  manifestSha256?: string;
}
export interface Model {
  name: string;
  versions?: ModelVersion[];
  defaultVersion?: string;
}
export interface RepositoryEntry {
  name: string;
  version?: string;
  state?: string;
  reason?: string;
}
export interface Rollout {
  modelName: string;
  stableVersion?: string;
  candidateVersion?: string;
  mode?: string;
  trafficFraction?: number;
  state?: string;
  updatedAt?: string;
  rollback?: { maxErrorRate?: number; minRequests?: number };
}
export interface RolloutStats {
  candidateRequests?: string;
  candidateErrors?: string;
  shadowComparisons?: string;
  shadowAgreement?: number;
  latencyDeltaMs?: number;
}
export interface Summary {
  requests: { total: number; ok: number; by_model: Record<string, number> };
  cache: { hits: number; misses: number };
  device_routes: Record<string, number>;
  sla: { deadline_ms: number; bucket_ms: number | null; finished: number; within: number };
  latency_heatmap: {
    bucket_upper_ms: Array<number | null>;
    regions: Array<{ region: string; device_class: string; counts: number[] }>;
  };
  cost: {
    org: string;
    total: number;
    per_1000: number;
    budget: number | null;
    budget_spent: number | null;
  };
  drift: Array<{ model: string; signal: string; psi: number }>;
  accuracy: { answers: number; expected: number | null; by_route: Record<string, number> };
}
export interface BudgetView {
  org: string;
  amount: number | null;
  period_s: number | null;
  spent: number | null;
  writable: boolean;
  note: string;
}
export interface ConsoleSettings {
  budget: BudgetView;
  privacy: { pseudonyms: boolean; dlp: boolean; dlp_kinds: string[]; sealed_at_rest: boolean };
}
export interface SimRun {
  policy: string;
  summary: Record<string, number>;
  series: Array<{ request: number; latency_ms: number; accuracy: number; offload_rate: number }>;
}
export interface SimResult {
  scenario: string;
  requests: number;
  seed: number;
  runs: SimRun[];
}
export interface ModelStats {
  name: string;
  version: string;
  inference_count?: number;
  execution_count?: number;
  inference_stats?: Record<string, { count?: number; ns?: number }>;
}

const enc = encodeURIComponent;

// The typed client and its generated messages load with the first call that needs them (they are
// most of the console's code besides React), so the sign-in page and the shell stay small.
type ClientModule = typeof import("./client");
type Typed = ReturnType<ClientModule["typedClient"]>;
let loaded: Promise<{ typed: Typed; RestError: ClientModule["RestError"] }> | null = null;
function typedClient() {
  loaded ??= import("./client").then((m) => ({ typed: m.typedClient(getToken), RestError: m.RestError }));
  return loaded;
}

// The typed client's errors as the console's.
async function viaClient<T>(call: (typed: Typed) => Promise<unknown>): Promise<T> {
  const { typed, RestError } = await typedClient();
  try {
    return (await call(typed)) as T;
  } catch (e) {
    if (e instanceof RestError) throw new ApiError(e.status, e.code, e.message);
    throw e;
  }
}

// /v1/policies: the served policy per device class and A/B experiments (cloud/rest/_policies.py).
export type ParamValue = number | boolean | string;
export interface PolicyConfig {
  kind: string;
  thresholds: Record<string, number>;
  params: Record<string, ParamValue>;
}
export interface ServedPolicy extends PolicyConfig {
  device_class: string;
  policy_id: string;
  policy_version: number;
  published_at: number;
  experiment: string | null;
}
export interface ParamSpec {
  type: "number" | "integer" | "boolean" | "string";
  minimum?: number;
  maximum?: number;
  default?: number;
  help?: string;
}
export interface Policies {
  classes: ServedPolicy[];
  exits: Array<{ name: string; threshold: number }>;
  cut_points: Array<{ name: string; codecs: string[] }>;
  kinds: Record<string, { thresholds: boolean; params: Record<string, ParamSpec> }>;
  threshold_range: [number, number];
}
export interface ArmResults {
  requests: number;
  accuracy: number | null;
  breach_rate: number | null;
  mean_latency_ms: number | null;
  mean_cost: number | null;
  stopped: string;
}
export interface ExperimentArm extends PolicyConfig {
  policy_id: string;
  policy_version: number;
  share: number;
  results: ArmResults;
}
export interface Experiment {
  name: string;
  device_class: string;
  state: "running" | "stopped";
  split: number;
  created_at: number;
  created_by: string;
  stopped_at: number | null;
  stopped_by: string;
  reason: string;
  guardrail: { min_accuracy: number; max_breach_rate: number; min_requests: number };
  arms: { control: ExperimentArm; treatment: ExperimentArm };
}
export interface NewExperiment {
  name: string;
  device_class: string;
  treatment: PolicyConfig;
  split: number;
  guardrail: { min_accuracy: number; max_breach_rate: number; min_requests: number };
}

export const api = {
  models: () => viaClient<{ models?: Model[] }>((typed) => typed.listModels()),
  model: (name: string) => call<{ model: Model }>("GET", `/v1/models/${enc(name)}`),
  repositoryIndex: () => call<RepositoryEntry[]>("POST", "/v2/repository/index", {}),
  load: (name: string) => call<unknown>("POST", `/v2/repository/models/${enc(name)}/load`, {}),
  stats: () => call<{ model_stats?: ModelStats[] }>("GET", "/v2/models/stats"),
  summary: (deadlineMs: number) =>
    call<Summary>("GET", `/v1/console/summary?deadline_ms=${enc(String(deadlineMs))}`),
  rollout: (name: string) =>
    call<{ rollout: Rollout; stats?: RolloutStats }>("GET", `/v1/deploy/rollouts/${enc(name)}`),
  setRollout: (rollout: Rollout) =>
    viaClient<{ rollout: Rollout }>((typed) => typed.setRollout(rollout as unknown as JsonValue)),
  simulate: (body: { policy: string; scenario: string; requests: number; seed: number; deadline_ms: number }) =>
    call<SimResult>("POST", "/v1/console/simulate", body),
  // The add-model wizard serves its cut point and thresholds to a device class as a static policy
  // (POST /v1/policies, the Policies page's route; Admin and Operator, audited).
  wizardServe: (body: {
    device_class: string;
    kind: "static";
    thresholds: Record<string, number>;
    params: { cut_point: string; codec: string };
  }) => call<{ device_class: string; policy_version: number }>("POST", "/v1/policies", body),
  policies: () => call<Policies>("GET", "/v1/policies"),
  setPolicy: (body: PolicyConfig & { device_class: string; expected_version?: number }) =>
    call<ServedPolicy>("POST", "/v1/policies", body),
  experiments: () => call<{ experiments: Experiment[] }>("GET", "/v1/policies/experiments"),
  createExperiment: (body: NewExperiment) => call<Experiment>("POST", "/v1/policies/experiments", body),
  stopExperiment: (name: string) => call<Experiment>("POST", `/v1/policies/experiments/${enc(name)}/stop`),
  settings: () => call<ConsoleSettings>("GET", "/v1/console/settings"),
  setBudget: (amount: number) => call<{ budget: BudgetView }>("PUT", "/v1/console/budget", { amount }),
  ready: async () => (await fetch("/v2/health/ready")).ok,
  openapi: () => call<{ info?: { version?: string } }>("GET", "/openapi.json"),
};
