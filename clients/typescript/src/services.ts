/**
 * Typed unary services of the gateway (every method's request and response are the generated
 * protobuf-es types): policy decisions, the model registry, telemetry, the result cache,
 * rollouts and the Triton/KServe-v2 inference service.
 */
import { type Client, createClient, type Transport } from "@connectrpc/connect";
import { CacheService } from "./gen/aiml021/cache/v1/cache_pb.js";
import { DeployService } from "./gen/aiml021/deploy/v1/deploy_pb.js";
import { PolicyService } from "./gen/aiml021/policy/v1/policy_pb.js";
import { ModelRegistryService } from "./gen/aiml021/registry/v1/registry_pb.js";
import { TelemetryService } from "./gen/aiml021/telemetry/v1/telemetry_pb.js";
import { GRPCInferenceService } from "./gen/inference/grpc_service_pb.js";

export interface GatewayClients {
  policy: Client<typeof PolicyService>;
  registry: Client<typeof ModelRegistryService>;
  telemetry: Client<typeof TelemetryService>;
  cache: Client<typeof CacheService>;
  deploy: Client<typeof DeployService>;
  inference: Client<typeof GRPCInferenceService>;
}

/** One typed client per unary service, all over `transport`. */
export function gatewayClients(transport: Transport): GatewayClients {
  return {
    policy: createClient(PolicyService, transport),
    registry: createClient(ModelRegistryService, transport),
    telemetry: createClient(TelemetryService, transport),
    cache: createClient(CacheService, transport),
    deploy: createClient(DeployService, transport),
    inference: createClient(GRPCInferenceService, transport),
  };
}
