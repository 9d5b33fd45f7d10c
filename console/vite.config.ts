import { defineConfig } from "vite";
import react from "@vitejs/plugin-react";

// The gateway serves the built console under /console/ on its REST port (same origin as the API,
// so the console talks to the gateway only through the public REST API).
export default defineConfig({
  base: "/console/",
  plugins: [react()],
  build: { outDir: "dist", emptyOutDir: true, sourcemap: false },
});
