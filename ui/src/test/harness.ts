// Renders the real App over Tauri's mocked IPC: commands are answered by `answers` (and
// recorded), and `push` delivers a view as the controller's event would.
import { render } from "@testing-library/preact";
import { mockIPC } from "@tauri-apps/api/mocks";
import { emit } from "@tauri-apps/api/event";
import { h } from "preact";
import { act } from "preact/test-utils";
import { App } from "../App";
import { tauriBackend } from "../backend";
import type { View } from "../bindings";

export type Call = { cmd: string; args: Record<string, unknown> };

export function start(initial: View, answers: Record<string, (args: Record<string, unknown>) => unknown> = {}) {
  const calls: Call[] = [];
  let current = initial;
  mockIPC(
    (cmd, payload) => {
      const args = (payload ?? {}) as Record<string, unknown>;
      calls.push({ cmd, args });
      if (cmd === "get_view") return current;
      const answer = answers[cmd];
      return answer ? answer(args) : null;
    },
    { shouldMockEvents: true },
  );
  const screen = render(h(App, { backend: tauriBackend }));
  const push = async (v: View) => {
    current = v;
    await act(async () => {
      await emit("view", v);
    });
  };
  return { screen, calls, push };
}
