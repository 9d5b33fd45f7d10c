/**
 * Against a real gateway over mTLS (started by tests/integration/clients/test_typescript.py,
 * which passes its address and certificates in the environment):
 *
 * 1. reconnect: requests held unanswered by the gateway survive a dropped stream; they are
 *    re-sent on the new stream under the same idempotency keys (the pytest side checks that the
 *    gateway computed each key once), then answered;
 * 2. a session inference, inline and chunked, within a byte credit smaller than the payloads;
 * 3. one bad request fails alone with its status;
 * 4. typed unary services: PolicyService.Decide, ModelRegistryService.ListModels, ModelInfer;
 * 5. the same over the REST bridge (the fetch-based client browsers use), with mTLS.
 */
import assert from "node:assert/strict";
import { writeFileSync } from "node:fs";
import { test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { durationFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  createGatewayTransport,
  GatewayRestClient,
  gatewayClients,
  InferFailed,
  nodeFetch,
  RestError,
  Session,
  tlsFilesFromDir,
} from "../src/index.js";
import { Modality } from "../src/gen/aiml021/common/v1/request_pb.js";
import { CodecKind, DataType } from "../src/gen/aiml021/common/v1/tensor_pb.js";
import { DecideRequestSchema } from "../src/gen/aiml021/policy/v1/policy_pb.js";
import { ModelInferRequestSchema } from "../src/gen/inference/grpc_service_pb.js";

const env = (name: string): string => {
  const value = process.env[name];
  if (value === undefined) throw new Error(`${name} is not set (run through pytest)`);
  return value;
};

const transport = createGatewayTransport({
  address: env("AIML021_GATEWAY"),
  tls: tlsFilesFromDir(env("AIML021_TLS_DIR"), env("AIML021_DEVICE")),
});
const MODEL = env("AIML021_MODEL"); // x [N, D] float32 -> y [N, 1], the sum over D

function vector(values: number[]): Uint8Array {
  return new Uint8Array(new Float32Array(values).buffer);
}

function sumOf(answerBytes: Uint8Array): number {
  const copy = answerBytes.slice(); // aligned copy
  return new Float32Array(copy.buffer)[0];
}

test("held requests survive a dropped stream, re-sent under the same idempotency keys", async () => {
  const session = await Session.open({ transport, deviceId: env("AIML021_DEVICE") });
  try {
    assert.ok(session.welcome.sessionId);
    const answers = [1, 2, 3, 4].map((i) =>
      session.infer({
        model: MODEL,
        dtype: DataType.FLOAT32,
        shape: [1, 4],
        payload: vector([i, i, i, i]),
      }),
    );
    // The gateway holds computations: nothing is answered until the pytest side sees the
    // second Hello (the reconnect) and releases them.
    await new Promise((resolve) => setTimeout(resolve, 300));
    assert.equal(session.inflight, 4);
    session.interrupt();
    const results = await Promise.all(answers);
    assert.deepEqual(
      results.map((r) => sumOf(r.outputs[0].contents)),
      [4, 8, 12, 16],
    );
    assert.equal(session.stats.connects, 2);
    assert.equal(session.stats.resent, 4);
    writeFileSync(
      env("AIML021_KEYS_OUT"),
      JSON.stringify(results.map((r) => r.idempotencyKey)),
    );
  } finally {
    await session.close();
  }
});

test("inline and chunked payloads within a byte credit smaller than them all", async () => {
  const session = await Session.open({ transport, maxChunkBytes: 4096 });
  try {
    const credit = Number(session.welcome.initialCreditBytes);
    assert.ok(credit > 0);
    const small = await session.infer({
      model: MODEL,
      dtype: DataType.FLOAT32,
      shape: [1, 3],
      payload: vector([1, 2, 3.5]),
    });
    assert.equal(sumOf(small.outputs[0].contents), 6.5);
    assert.equal(session.stats.inline, 1);
    // 3 KiB elements (12 KiB) each: three chunks per request; together more than the credit.
    const n = 3072;
    const big = Array.from({ length: Math.ceil((2 * credit) / (4 * n)) + 1 }, (_, k) =>
      session.infer({
        model: MODEL,
        dtype: DataType.FLOAT32,
        shape: [1, n],
        payload: vector(Array.from({ length: n }, () => k + 1)),
      }),
    );
    const sums = (await Promise.all(big)).map((r) => sumOf(r.outputs[0].contents));
    assert.deepEqual(
      sums,
      sums.map((_, k) => n * (k + 1)),
    );
    assert.ok(session.stats.chunks >= 3 * big.length);
    assert.ok(
      session.stats.creditWaits > 0,
      `the credit never ran out: the test proves nothing (${JSON.stringify(session.stats)}, credit ${credit})`,
    );
  } finally {
    await session.close();
  }
});

test("a bad request fails alone with its status", async () => {
  const session = await Session.open({ transport });
  try {
    const bad = session.infer({
      model: "no_such_model",
      dtype: DataType.FLOAT32,
      shape: [1, 2],
      payload: vector([1, 2]),
    });
    await assert.rejects(bad, (err: unknown) => {
      assert.ok(err instanceof InferFailed);
      assert.equal(err.code, Code.NotFound);
      return true;
    });
    const good = await session.infer({
      model: MODEL,
      dtype: DataType.FLOAT32,
      shape: [1, 2],
      payload: vector([2, 5]),
    });
    assert.equal(sumOf(good.outputs[0].contents), 7);
  } finally {
    await session.close();
  }
});

test("typed unary services: Decide, ListModels, ModelInfer", async () => {
  const clients = gatewayClients(transport);
  const decided = await clients.policy.decide(
    create(DecideRequestSchema, {
      context: {
        modelName: env("AIML021_POLICY_MODEL"),
        exitIndex: 0,
        exitConfidences: [0.4],
        bandwidthBps: 20e6,
        rtt: durationFromMs(10),
        deadline: durationFromMs(100),
        modality: Modality.IMAGE,
      },
    }),
  );
  assert.ok(decided.decision?.decisionId);
  assert.ok(decided.decision?.policyId);

  const listed = await clients.registry.listModels({});
  assert.ok(listed.models.some((m) => m.name === MODEL));

  const infer = create(ModelInferRequestSchema, {
    modelName: MODEL,
    id: "ts-1",
    inputs: [{ name: "x", datatype: "FP32", shape: [1n, 2n] }],
    rawInputContents: [vector([1.5, 2])],
  });
  const answer = await clients.inference.modelInfer(infer);
  assert.equal(answer.id, "ts-1");
  assert.deepEqual(answer.outputs[0].shape, [1n, 1n]);
  assert.equal(sumOf(answer.rawOutputContents[0]), 3.5);

  await assert.rejects(
    clients.inference.modelInfer({ ...infer, modelName: "no_such_model" }),
    (err: unknown) => err instanceof ConnectError && err.code === Code.NotFound,
  );
});

test("the REST client: Decide, features, ListModels and a typed error, over mTLS", async () => {
  const rest = new GatewayRestClient(
    `https://${env("AIML021_REST")}`,
    nodeFetch(tlsFilesFromDir(env("AIML021_TLS_DIR"), env("AIML021_DEVICE"))),
  );
  const { decision } = await rest.decide({
    context: {
      modelName: env("AIML021_POLICY_MODEL"),
      exitIndex: 0,
      exitConfidences: [0.4],
      bandwidthBps: 20e6,
      rtt: durationFromMs(10),
      deadline: durationFromMs(100),
      modality: Modality.IMAGE,
    },
  });
  assert.ok(decision?.decisionId && decision.policyId);

  const answer = await rest.features({
    requestId: "rest-1",
    modelName: MODEL,
    featuresB64: vector([1, 2, 3, 4.5]),
    compression: { dtype: DataType.FLOAT32, shape: [1n, 4n], codec: { stages: [{ kind: CodecKind.RAW }] } },
  });
  assert.equal(answer.requestId, "rest-1");
  assert.equal(sumOf(answer.outputs[0].contents), 10.5);

  const models = await rest.listModels();
  assert.ok(models.models.some((m) => m.name === MODEL));

  await assert.rejects(
    rest.features({
      modelName: "no_such_model",
      featuresB64: vector([1]),
      compression: { dtype: DataType.FLOAT32, shape: [1n, 1n] },
    }),
    (err: unknown) => err instanceof RestError && err.status === 404 && err.code === "NOT_FOUND",
  );
});
