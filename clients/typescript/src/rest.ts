/**
 * The gateway's REST API (`/v1`, proto3 JSON of the same generated messages) for environments
 * without HTTP/2 gRPC, browsers first: it needs only a `fetch`. Answers are parsed into the
 * generated types; errors (`{"code", "message"}`) reject with `RestError`.
 */
import {
  create,
  type DescMessage,
  fromJsonString,
  type MessageInitShape,
  type MessageShape,
  toJsonString,
} from "@bufbuild/protobuf";
import { GetRequestSchema, GetResponseSchema, PutRequestSchema, PutResponseSchema } from "./gen/aiml021/cache/v1/cache_pb.js";
import { SetRolloutRequestSchema, SetRolloutResponseSchema } from "./gen/aiml021/deploy/v1/deploy_pb.js";
import { DecideRequestSchema, DecideResponseSchema } from "./gen/aiml021/policy/v1/policy_pb.js";
import { ListModelsResponseSchema } from "./gen/aiml021/registry/v1/registry_pb.js";
import { InferFeaturesRequestSchema } from "./gen/aiml021/session/v1/features_pb.js";
import { InferResultSchema } from "./gen/aiml021/session/v1/session_pb.js";
import { ReportRequestSchema, ReportResponseSchema } from "./gen/aiml021/telemetry/v1/telemetry_pb.js";
import { ModelInferRequestSchema, ModelInferResponseSchema } from "./gen/inference/grpc_service_pb.js";

/** The part of `fetch` the client uses (a browser's or Node's `fetch`, or `nodeFetch`). */
export type FetchLike = (
  url: string,
  init: { method: string; headers: Record<string, string>; body?: string },
) => Promise<{ status: number; text(): Promise<string> }>;

/** A REST call failed: HTTP status and the gateway's error code and message. */
export class RestError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = "RestError";
  }
}

export class GatewayRestClient {
  /** `baseUrl`: e.g. `https://gateway.example:8443` (the gateway's `--rest-port`). */
  constructor(
    private readonly baseUrl: string,
    private readonly fetchImpl: FetchLike = globalThis.fetch as unknown as FetchLike,
  ) {}

  decide(request: MessageInitShape<typeof DecideRequestSchema>) {
    return this.post("/v1/policy/decide", DecideRequestSchema, request, DecideResponseSchema);
  }

  infer(request: MessageInitShape<typeof ModelInferRequestSchema>) {
    return this.post("/v1/infer", ModelInferRequestSchema, request, ModelInferResponseSchema);
  }

  /** Coded features of a cut point (`featuresB64` + `compression`); answered as on a session. */
  features(request: MessageInitShape<typeof InferFeaturesRequestSchema>) {
    return this.post("/v1/features", InferFeaturesRequestSchema, request, InferResultSchema);
  }

  telemetry(request: MessageInitShape<typeof ReportRequestSchema>) {
    return this.post("/v1/telemetry", ReportRequestSchema, request, ReportResponseSchema);
  }

  cacheGet(request: MessageInitShape<typeof GetRequestSchema>) {
    return this.post("/v1/cache/get", GetRequestSchema, request, GetResponseSchema);
  }

  cachePut(request: MessageInitShape<typeof PutRequestSchema>) {
    return this.post("/v1/cache/put", PutRequestSchema, request, PutResponseSchema);
  }

  setRollout(request: MessageInitShape<typeof SetRolloutRequestSchema>) {
    return this.post("/v1/deploy/canary", SetRolloutRequestSchema, request, SetRolloutResponseSchema);
  }

  async listModels() {
    return this.send("GET", "/v1/models", undefined, ListModelsResponseSchema);
  }

  private post<I extends DescMessage, O extends DescMessage>(
    path: string,
    input: I,
    request: MessageInitShape<I>,
    output: O,
  ): Promise<MessageShape<O>> {
    return this.send("POST", path, toJsonString(input, create(input, request)), output);
  }

  private async send<O extends DescMessage>(
    method: string,
    path: string,
    body: string | undefined,
    output: O,
  ): Promise<MessageShape<O>> {
    const headers: Record<string, string> = { accept: "application/json" };
    if (body !== undefined) headers["content-type"] = "application/json";
    const response = await this.fetchImpl(this.baseUrl + path, { method, headers, body });
    const text = await response.text();
    if (response.status !== 200) {
      let code = "UNKNOWN";
      let message = text.slice(0, 500);
      try {
        const doc = JSON.parse(text) as { code?: string; message?: string };
        code = doc.code ?? code;
        message = doc.message ?? message;
      } catch {
        // not JSON: keep the text
      }
      throw new RestError(response.status, code, message);
    }
    // Fields a newer gateway added are skipped, as proto3 readers do.
    return fromJsonString(output, text, { ignoreUnknownFields: true });
  }
}
