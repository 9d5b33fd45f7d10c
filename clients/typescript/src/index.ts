/**
 * Typed client for the aiml021 gateway: the generated messages and services (protobuf-es), a
 * gRPC transport with mutual TLS, typed unary service clients and the device session helper.
 */
export { createGatewayTransport, tlsFilesFromDir } from "./transport.js";
export type { GatewayTlsFiles, GatewayTransportOptions } from "./transport.js";
export { gatewayClients } from "./services.js";
export type { GatewayClients } from "./services.js";
export { InferFailed, PROTOCOL_VERSION, Session } from "./session.js";
export { GatewayRestClient, RestError } from "./rest.js";
export type { FetchLike } from "./rest.js";
export { nodeFetch } from "./rest-node.js";
export type {
  ReconnectOptions,
  SessionAnswer,
  SessionOptions,
  SessionRequest,
  SessionStats,
} from "./session.js";
export * as policy from "./gen/aiml021/policy/v1/policy_pb.js";
export * as registry from "./gen/aiml021/registry/v1/registry_pb.js";
export * as session from "./gen/aiml021/session/v1/session_pb.js";
export * as tensor from "./gen/aiml021/common/v1/tensor_pb.js";
export * as request from "./gen/aiml021/common/v1/request_pb.js";
export * as telemetry from "./gen/aiml021/telemetry/v1/telemetry_pb.js";
export * as cache from "./gen/aiml021/cache/v1/cache_pb.js";
export * as deploy from "./gen/aiml021/deploy/v1/deploy_pb.js";
export * as inference from "./gen/inference/grpc_service_pb.js";
export * as features from "./gen/aiml021/session/v1/features_pb.js";
