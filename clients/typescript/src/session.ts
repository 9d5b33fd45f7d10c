/**
 * A device session: one persistent SessionService.Connect stream shared by every concurrent
 * request, as the Python edge agent keeps it.
 *
 * - Handshake: Hello, then the gateway's Welcome (session id, negotiated limits, byte credit).
 * - Payloads go inline in the InferHeader when the gateway accepts that (Welcome.inline_payloads),
 *   the payload fits one chunk and the credit covers it; otherwise header then TensorChunks.
 * - Flow control: at most the negotiated number of requests open, and a request only once the
 *   byte credit (Welcome.initial_credit_bytes plus every Credit) covers its whole payload.
 * - Reconnect: when the stream fails, it reconnects with exponential backoff (Hello names the old
 *   session) and re-sends every unanswered request under its original request id and idempotency
 *   key, so the gateway computes each at most once.
 * - One request's failure (InferError) fails only that request, with its gRPC status code.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import { Priority } from "./gen/aiml021/common/v1/request_pb.js";
import { CodecKind, DataType, type Tensor } from "./gen/aiml021/common/v1/tensor_pb.js";
import { Route } from "./gen/aiml021/common/v1/request_pb.js";
import {
  type ConnectRequest,
  ConnectRequestSchema,
  type ConnectResponse,
  type InferResult,
  SessionService,
  type Welcome,
} from "./gen/aiml021/session/v1/session_pb.js";

/** Protocol version this client speaks (Hello.protocol_version). */
export const PROTOCOL_VERSION = 1;

export interface ReconnectOptions {
  /** Attempts after a failure before unanswered requests fail (default 5). */
  attempts?: number;
  /** First backoff in milliseconds, doubled each attempt (default 100). */
  initialDelayMs?: number;
  /** Longest backoff in milliseconds (default 5000). */
  maxDelayMs?: number;
}

export interface SessionOptions {
  transport: Transport;
  /** Informational: the gateway takes the device id from the client certificate. */
  deviceId?: string;
  deviceClass?: string;
  agentVersion?: string;
  /** Client-side cap on open requests (the gateway's negotiated limit applies too). */
  maxInflight?: number;
  /** Client-side chunk size in bytes (the gateway's negotiated limit applies too). */
  maxChunkBytes?: number;
  reconnect?: ReconnectOptions;
}

export interface SessionRequest {
  model: string;
  /** Empty or absent: the version the gateway's rollout chooses. */
  version?: string;
  /** The cut point the features come from; absent for a full model's input. */
  cutPoint?: string;
  dtype: DataType;
  shape: number[];
  /** Raw little-endian elements (row-major). */
  payload: Uint8Array;
  /** Stable across retries and reconnects; a random UUID when absent. */
  idempotencyKey?: string;
  deadline?: Date;
  priority?: Priority;
}

export interface SessionAnswer {
  requestId: string;
  idempotencyKey: string;
  outputs: Tensor[];
  topClass: number;
  confidence: number;
  route: Route;
  servedModelVersion: string;
  cached: boolean;
}

/** One request failed: the gateway's status for it (the session goes on). */
export class InferFailed extends Error {
  constructor(
    readonly code: Code,
    message: string,
    readonly requestId: string,
  ) {
    super(message);
    this.name = "InferFailed";
  }
}

export interface SessionStats {
  /** Streams opened (1 + reconnects). */
  connects: number;
  /** Requests written (re-sends included). */
  sent: number;
  /** Requests written again on a new stream after a reconnect. */
  resent: number;
  /** Requests whose payload went inline in the header. */
  inline: number;
  /** TensorChunk frames written. */
  chunks: number;
  /** Times a send waited for byte credit. */
  creditWaits: number;
}

interface Pending {
  requestId: string;
  idempotencyKey: string;
  request: SessionRequest;
  resolve: (answer: SessionAnswer) => void;
  reject: (error: Error) => void;
  sends: number;
}

/** An unbounded queue of outgoing frames that a stream consumes as an async iterable. */
class Outbox implements AsyncIterable<ConnectRequest> {
  private items: ConnectRequest[] = [];
  private waiter: (() => void) | null = null;
  private ended = false;

  push(frame: ConnectRequest): void {
    this.items.push(frame);
    this.wake();
  }

  end(): void {
    this.ended = true;
    this.wake();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<ConnectRequest> {
    for (;;) {
      const frame = this.items.shift();
      if (frame !== undefined) {
        yield frame;
        continue;
      }
      if (this.ended) return;
      await new Promise<void>((resolve) => {
        this.waiter = resolve;
      });
    }
  }
}

/** One stream and its flow-control state. */
class Stream {
  readonly open = new Set<string>();
  credit: bigint | null = null;
  private waiters: (() => void)[] = [];

  constructor(
    readonly welcome: Welcome,
    readonly maxInflight: number,
    readonly chunkBytes: number,
    readonly outbox: Outbox,
    readonly abort: AbortController,
  ) {
    // A gateway that grants no initial credit does not meter bytes.
    this.credit = welcome.initialCreditBytes > 0n ? welcome.initialCreditBytes : null;
  }

  notify(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /**
   * Wait until `grant` succeeds; it checks and takes in one synchronous step, so two waiters
   * never both take the last slot or the last bytes. Returns whether it had to wait.
   */
  async acquire(grant: () => boolean): Promise<boolean> {
    let waited = false;
    for (;;) {
      if (this.abort.signal.aborted) throw new ConnectError("stream ended", Code.Unavailable);
      if (grant()) return waited;
      waited = true;
      await new Promise<void>((resolve) => this.waiters.push(resolve));
    }
  }

  hasCredit(n: number): boolean {
    return this.credit === null || this.credit >= BigInt(n);
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export class Session {
  readonly stats: SessionStats = {
    connects: 0,
    sent: 0,
    resent: 0,
    inline: 0,
    chunks: 0,
    creditWaits: 0,
  };
  private readonly client;
  private readonly pending = new Map<string, Pending>();
  private stream: Stream | null = null;
  private sessionId = "";
  private closed = false;
  private seq = 0;
  private loop: Promise<void> | null = null;
  private pinger: NodeJS.Timeout | null = null;
  private responses: AsyncIterator<ConnectResponse> | null = null;

  private constructor(private readonly options: SessionOptions) {
    this.client = createClient(SessionService, options.transport);
  }

  /** Open a session: returns once the gateway has welcomed it. */
  static async open(options: SessionOptions): Promise<Session> {
    const session = new Session(options);
    await session.connect();
    session.loop = session.run();
    return session;
  }

  /** The gateway's Welcome on the current stream. */
  get welcome(): Welcome {
    if (this.stream === null) throw new Error("session is not connected");
    return this.stream.welcome;
  }

  /** Requests sent or waiting and not answered yet. */
  get inflight(): number {
    return this.pending.size;
  }

  /** Run one request on the session; resolves with its answer, rejects with InferFailed. */
  infer(request: SessionRequest): Promise<SessionAnswer> {
    if (this.closed) return Promise.reject(new Error("session is closed"));
    const requestId = `r${++this.seq}`;
    const idempotencyKey = request.idempotencyKey ?? randomUUID();
    return new Promise<SessionAnswer>((resolve, reject) => {
      const p: Pending = { requestId, idempotencyKey, request, resolve, reject, sends: 0 };
      this.pending.set(requestId, p);
      if (this.stream !== null) void this.send(this.stream, p);
    });
  }

  /**
   * Drop the current stream as a network failure would (e.g. when the app learns the network
   * changed): the session reconnects and re-sends every unanswered request under the same keys.
   */
  interrupt(): void {
    this.stream?.abort.abort();
  }

  /** End the session: unanswered requests fail with CANCELLED. */
  async close(): Promise<void> {
    this.closed = true;
    this.stopPinging();
    if (this.stream !== null) {
      this.stream.outbox.end();
      this.stream.abort.abort();
    }
    await this.loop?.catch(() => undefined);
    this.failAll(new InferFailed(Code.Canceled, "session closed", ""));
  }

  private hello(): ConnectRequest {
    const o = this.options;
    return create(ConnectRequestSchema, {
      frame: {
        case: "hello",
        value: {
          deviceId: o.deviceId ?? "",
          protocolVersion: PROTOCOL_VERSION,
          deviceClass: o.deviceClass ?? "",
          agentVersion: o.agentVersion ?? "aiml021-ts/0.1.0",
          resumeSessionId: this.sessionId,
          capabilities: {
            codecs: [CodecKind.RAW],
            maxInflightRequests: o.maxInflight ?? 64,
            maxChunkBytes: BigInt(o.maxChunkBytes ?? 1024 * 1024),
            acceptsPolicyUpdates: false,
          },
        },
      },
    });
  }

  /** Open a stream and wait for Welcome (then re-send what is unanswered). */
  private async connect(): Promise<void> {
    const outbox = new Outbox();
    outbox.push(this.hello());
    const abort = new AbortController();
    const answers = this.client.connect(outbox, { signal: abort.signal })[Symbol.asyncIterator]();
    const first = await answers.next();
    if (first.done || first.value.frame.case !== "welcome") {
      abort.abort();
      throw new ConnectError("the gateway did not answer Hello with Welcome", Code.Unavailable);
    }
    const welcome = first.value.frame.value;
    const limits = welcome.limits;
    const maxInflight = Math.min(
      this.options.maxInflight ?? 64,
      limits?.maxInflightRequests || Number.MAX_SAFE_INTEGER,
    );
    const chunkBytes = Math.min(
      this.options.maxChunkBytes ?? 1024 * 1024,
      Number(limits?.maxChunkBytes || BigInt(Number.MAX_SAFE_INTEGER)),
    );
    const stream = new Stream(welcome, maxInflight, chunkBytes, outbox, abort);
    this.stream = stream;
    this.responses = answers;
    this.sessionId = welcome.sessionId;
    this.stats.connects++;
    this.startPinging(stream);
    // Unanswered requests, oldest first, under their original ids and keys.
    for (const p of [...this.pending.values()]) void this.send(stream, p);
  }

  private startPinging(stream: Stream): void {
    this.stopPinging();
    const interval = stream.welcome.limits?.pingInterval;
    const ms = interval ? Number(interval.seconds) * 1000 + interval.nanos / 1e6 : 0;
    if (ms <= 0) return;
    let nonce = 0n;
    this.pinger = setInterval(() => {
      stream.outbox.push(
        create(ConnectRequestSchema, {
          frame: { case: "ping", value: { nonce: ++nonce, sentAt: timestampFromDate(new Date()) } },
        }),
      );
    }, ms);
    this.pinger.unref();
  }

  private stopPinging(): void {
    if (this.pinger !== null) clearInterval(this.pinger);
    this.pinger = null;
  }

  /** Read answers; reconnect when the stream fails, until closed or out of attempts. */
  private async run(): Promise<void> {
    const r = this.options.reconnect ?? {};
    const attempts = r.attempts ?? 5;
    let delay = r.initialDelayMs ?? 100;
    for (;;) {
      try {
        await this.read();
      } catch (err) {
        if (this.closed) return;
        void err;
      }
      if (this.closed) return;
      this.stream?.abort.abort();
      this.stream?.notify();
      this.stream = null;
      let connected = false;
      for (let i = 0; i < attempts && !this.closed; i++) {
        await sleep(delay + Math.random() * delay * 0.2);
        delay = Math.min(delay * 2, r.maxDelayMs ?? 5000);
        try {
          await this.connect();
          connected = true;
          break;
        } catch {
          // try again
        }
      }
      if (!connected) {
        this.failAll(new InferFailed(Code.Unavailable, "gateway unreachable", ""));
        return;
      }
      delay = r.initialDelayMs ?? 100;
    }
  }

  private async read(): Promise<void> {
    const stream = this.stream;
    const answers = this.responses;
    if (stream === null || answers === null) return;
    for (;;) {
      const next = await answers.next();
      if (next.done) return;
      const frame = next.value.frame;
      switch (frame.case) {
        case "inferResult":
          this.finish(stream, frame.value.requestId, frame.value, null);
          break;
        case "inferError": {
          const status = frame.value.status;
          const err = new InferFailed(
            (status?.code ?? Code.Unknown) as Code,
            status?.message ?? "request failed",
            frame.value.requestId,
          );
          this.finish(stream, frame.value.requestId, null, err);
          break;
        }
        case "credit":
          if (stream.credit !== null) stream.credit += frame.value.bytes;
          stream.notify();
          break;
        case "drain":
          // The gateway ends the stream after in-flight work; run() then reconnects.
          break;
        default:
          break;
      }
    }
  }

  private finish(
    stream: Stream,
    requestId: string,
    result: InferResult | null,
    error: Error | null,
  ): void {
    stream.open.delete(requestId);
    stream.notify();
    const p = this.pending.get(requestId);
    if (p === undefined) return;
    this.pending.delete(requestId);
    if (error !== null) {
      p.reject(error);
      return;
    }
    const r = result as InferResult;
    p.resolve({
      requestId,
      idempotencyKey: p.idempotencyKey,
      outputs: r.outputs,
      topClass: r.topClass,
      confidence: r.confidence,
      route: r.route,
      servedModelVersion: r.servedModelVersion,
      cached: r.cached,
    });
  }

  private failAll(error: InferFailed): void {
    for (const p of this.pending.values()) {
      p.reject(new InferFailed(error.code, error.message, p.requestId));
    }
    this.pending.clear();
  }

  /** Write one request on `stream` within its limits (inline or header + chunks). */
  private async send(stream: Stream, p: Pending): Promise<void> {
    try {
      if (stream.open.has(p.requestId)) return;
      await stream.acquire(() => {
        if (stream.open.size >= stream.maxInflight) return false;
        stream.open.add(p.requestId);
        return true;
      });
      if (this.pending.get(p.requestId) !== p) {
        stream.open.delete(p.requestId);
        stream.notify();
        return;
      }
      if (p.sends > 0) this.stats.resent++;
      p.sends++;
      this.stats.sent++;
      const req = p.request;
      const size = req.payload.length;
      const inline =
        stream.welcome.inlinePayloads && size > 0 && size <= stream.chunkBytes && stream.hasCredit(size);
      const header = {
        requestId: p.requestId,
        idempotencyKey: p.idempotencyKey,
        modelName: req.model,
        modelVersion: req.version ?? "",
        cutPoint: req.cutPoint ?? "",
        totalBytes: BigInt(size),
        priority: req.priority ?? Priority.UNSPECIFIED,
        encoding: {
          dtype: req.dtype,
          shape: req.shape.map((d) => BigInt(d)),
          codec: { stages: [{ kind: CodecKind.RAW }] },
        },
        ...(req.deadline !== undefined ? { deadline: timestampFromDate(req.deadline) } : {}),
        ...(inline ? { payload: req.payload } : {}),
      };
      // The gateway reserves a request's whole payload in the session buffer when its header
      // arrives, and the initial credit is that buffer: so the credit is spent for the whole
      // payload before the header goes (a header past the buffer would fail RESOURCE_EXHAUSTED).
      if (stream.credit !== null && BigInt(size) > stream.welcome.initialCreditBytes) {
        this.finish(stream, p.requestId, null, new InferFailed(
          Code.ResourceExhausted,
          `payload of ${size} bytes exceeds the session's byte credit of ${stream.welcome.initialCreditBytes}`,
          p.requestId,
        ));
        return;
      }
      await this.spend(stream, size);
      if (inline) {
        stream.outbox.push(
          create(ConnectRequestSchema, { frame: { case: "inferHeader", value: header } }),
        );
        this.stats.inline++;
        return;
      }
      stream.outbox.push(create(ConnectRequestSchema, { frame: { case: "inferHeader", value: header } }));
      for (let offset = 0; offset < size; offset += stream.chunkBytes) {
        const data = req.payload.subarray(offset, Math.min(size, offset + stream.chunkBytes));
        stream.outbox.push(
          create(ConnectRequestSchema, {
            frame: {
              case: "tensorChunk",
              value: {
                requestId: p.requestId,
                offset: BigInt(offset),
                data,
                last: offset + data.length >= size,
              },
            },
          }),
        );
        this.stats.chunks++;
      }
    } catch {
      // The stream ended while this request waited: the next stream re-sends it.
    }
  }

  private async spend(stream: Stream, n: number): Promise<void> {
    const waited = await stream.acquire(() => {
      if (!stream.hasCredit(n)) return false;
      if (stream.credit !== null) stream.credit -= BigInt(n);
      return true;
    });
    if (waited) this.stats.creditWaits++;
  }
}
