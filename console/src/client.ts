// The typed REST client of the clients issue (clients/typescript: GatewayRestClient over the
// generated protobuf-es messages), for the calls it offers; the console's other calls (KServe-v2
// routes and the two console routes) go through api.ts's fetch wrapper. Both send the operator's
// token; answers are turned back into proto3 JSON, the shape the pages read.
import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { GatewayRestClient, RestError, type FetchLike } from "@aiml021/client/rest";
import { RolloutSchema, SetRolloutResponseSchema } from "@aiml021/client/gen/aiml021/deploy/v1/deploy_pb";
import { ListModelsResponseSchema } from "@aiml021/client/gen/aiml021/registry/v1/registry_pb";

export { RestError };

export function typedClient(token: () => string): {
  listModels: () => Promise<JsonValue>;
  setRollout: (rollout: JsonValue) => Promise<JsonValue>;
} {
  const authFetch: FetchLike = (url, init) => {
    const t = token();
    const headers = t ? { ...init.headers, authorization: `Bearer ${t}` } : init.headers;
    return fetch(url, { ...init, headers });
  };
  const client = new GatewayRestClient("", authFetch);
  return {
    listModels: async () => toJson(ListModelsResponseSchema, await client.listModels()),
    setRollout: async (rollout) =>
      toJson(SetRolloutResponseSchema, await client.setRollout({ rollout: fromJson(RolloutSchema, rollout) })),
  };
}
