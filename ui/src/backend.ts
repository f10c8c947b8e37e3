// The only place the UI talks to the app's Rust side: Tauri commands (each answered by the
// controller) and the `view` event it emits after every change. Views get a Backend, so tests
// can drive them through Tauri's mocked IPC.
import { invoke } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import type { ActionError, NetcheckReport, PingReply, Settings, View } from "./bindings";

export interface Backend {
  getView(): Promise<View>;
  /** Calls `cb` with every new view; resolves to a function that stops it. */
  onView(cb: (v: View) => void): Promise<() => void>;
  retry(): Promise<void>;
  signIn(server: string, authKey: string | null): Promise<void>;
  cancelSignIn(): Promise<void>;
  setConnected(on: boolean): Promise<void>;
  signOut(): Promise<void>;
  ping(peer: string): Promise<PingReply>;
  netcheck(): Promise<NetcheckReport>;
  setSettings(s: Settings): Promise<void>;
  /** The routes toggle, the exit-node picker and what this device offers (null: unchanged;
   * "" exit node: none; [] routes: none). */
  setRoutes(r: RouteChoice): Promise<void>;
  copy(text: string): Promise<void>;
  exportDiagnostics(): Promise<string>;
}

export type RouteChoice = {
  acceptRoutes: boolean | null;
  exitNode: string | null;
  allowLan: boolean | null;
  advertiseRoutes: string[] | null;
  advertiseExitNode: boolean | null;
};

export const tauriBackend: Backend = {
  getView: () => invoke<View>("get_view"),
  onView: (cb) => listen<View>("view", (e) => cb(e.payload)),
  retry: () => invoke("retry"),
  signIn: (server, authKey) => invoke("sign_in", { server, authKey }),
  cancelSignIn: () => invoke("cancel_sign_in"),
  setConnected: (on) => invoke("set_connected", { on }),
  signOut: () => invoke("sign_out"),
  ping: (peer) => invoke<PingReply>("ping", { peer }),
  netcheck: () => invoke<NetcheckReport>("netcheck"),
  setSettings: (settings) => invoke("set_settings", { settings }),
  setRoutes: (r) => invoke("set_routes", r),
  copy: (text) => invoke("copy_text", { text }),
  exportDiagnostics: () => invoke<string>("export_diagnostics"),
};

/** The sentence of a failed command (an ActionError from Rust, or anything else). */
export function errorText(e: unknown): string {
  if (e && typeof e === "object" && "message" in e) {
    return String((e as ActionError).message);
  }
  return String(e);
}
