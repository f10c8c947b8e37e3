import { defineConfig } from "vitest/config";
import preact from "@preact/preset-vite";

// Tauri serves ui/dist; the dev server is for `cargo tauri dev`.
export default defineConfig({
  plugins: [preact()],
  clearScreen: false,
  server: { port: 5173, strictPort: true },
  build: { target: "es2021", outDir: "dist", emptyOutDir: true },
  test: {
    environment: "jsdom",
    setupFiles: ["./src/test/setup.ts"],
  },
});
