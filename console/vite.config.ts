import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

const client = (p: string) => fileURLToPath(new URL(`../clients/typescript/${p}`, import.meta.url));

// The gateway serves the built console under /console/ on its REST port (same origin as the API,
// so the console talks to the gateway only through the public REST API). The typed REST client
// of clients/typescript (GatewayRestClient and the generated messages) is bundled from source.
export default defineConfig({
  base: "/console/",
  plugins: [react()],
  resolve: {
    // one copy of @bufbuild/protobuf: the client's (its subpaths resolve from the client's files)
    alias: [
      { find: /^@aiml021\/client\//, replacement: `${client("src")}/` },
      { find: /^@bufbuild\/protobuf$/, replacement: client("node_modules/@bufbuild/protobuf/dist/esm/index.js") },
    ],
  },
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
});
