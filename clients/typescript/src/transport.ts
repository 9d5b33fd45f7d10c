/**
 * The gRPC transport to a gateway: HTTP/2 with mutual TLS (the device's certificate and key, the
 * gateway's CA), as every gateway listener requires unless it runs with --insecure.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { Transport } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

export interface GatewayTlsFiles {
  /** PEM of the CA that signed the gateway's certificate (ca.pem). */
  ca: string | Buffer;
  /** The device's certificate chain (PEM). */
  cert: string | Buffer;
  /** The device's private key (PEM). */
  key: string | Buffer;
}

export interface GatewayTransportOptions {
  /** host:port of the gateway's gRPC listener. */
  address: string;
  /** mTLS material; omit only for a gateway started with --insecure (plaintext). */
  tls?: GatewayTlsFiles;
  /** Name the gateway's certificate is checked against (default: the host of `address`). */
  serverName?: string;
}

/** A Connect transport speaking gRPC to the gateway. */
export function createGatewayTransport(options: GatewayTransportOptions): Transport {
  if (options.tls === undefined) {
    return createGrpcTransport({ baseUrl: `http://${options.address}` });
  }
  const { ca, cert, key } = options.tls;
  return createGrpcTransport({
    baseUrl: `https://${options.address}`,
    nodeOptions: {
      ca,
      cert,
      key,
      minVersion: "TLSv1.3",
      ...(options.serverName !== undefined ? { servername: options.serverName } : {}),
    },
  });
}

/**
 * mTLS files as `aiml021 certs` writes them: `<dir>/ca.pem`, `<dir>/<device>.pem`,
 * `<dir>/<device>.key`.
 */
export function tlsFilesFromDir(dir: string, device: string): GatewayTlsFiles {
  return {
    ca: readFileSync(join(dir, "ca.pem")),
    cert: readFileSync(join(dir, `${device}.pem`)),
    key: readFileSync(join(dir, `${device}.key`)),
  };
}
