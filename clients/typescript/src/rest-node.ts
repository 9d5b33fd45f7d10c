/**
 * A `fetch` for Node with mutual TLS (Node's built-in fetch cannot present a client
 * certificate): one keep-alive HTTPS agent carrying the device's certificate and key.
 */
import { Agent, request } from "node:https";
import type { FetchLike } from "./rest.js";
import type { GatewayTlsFiles } from "./transport.js";

export function nodeFetch(tls: GatewayTlsFiles): FetchLike {
  const agent = new Agent({ ...tls, keepAlive: true, minVersion: "TLSv1.3" });
  return (url, init) =>
    new Promise((resolve, reject) => {
      const req = request(url, { method: init.method, headers: init.headers, agent }, (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("error", reject);
        res.on("end", () => {
          const body = Buffer.concat(chunks).toString("utf8");
          resolve({ status: res.statusCode ?? 0, text: async () => body });
        });
      });
      req.on("error", reject);
      if (init.body !== undefined) req.write(init.body);
      req.end();
    });
}
