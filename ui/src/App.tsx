// The window: which screen to show for the view the controller sent (the service missing,
// signing in, or the main screen with its tabs), kept up to date by the `view` event.
import { useEffect, useState } from "preact/hooks";
import type { Backend } from "./backend";
import type { View } from "./bindings";
import { DaemonProblem } from "./views/DaemonProblem";
import { Header } from "./views/Header";
import { Network } from "./views/Network";
import { PeerDetail } from "./views/PeerDetail";
import { PeerList } from "./views/PeerList";
import { SettingsView } from "./views/SettingsView";
import { SignIn } from "./views/SignIn";

type Tab = "peers" | "network" | "settings";

export function App(props: { backend: Backend }) {
  const { backend } = props;
  const [view, setView] = useState<View | null>(null);
  useEffect(() => {
    let stop: (() => void) | null = null;
    let live = true;
    backend.onView((v) => setView(v)).then((f) => {
      if (live) stop = f;
      else f();
    });
    backend.getView().then((v) => setView((cur) => cur ?? v));
    return () => {
      live = false;
      stop?.();
    };
  }, [backend]);
  if (!view) {
    return (
      <main class="centre" aria-busy="true">
        <p>Starting…</p>
      </main>
    );
  }
  return <Screen backend={backend} view={view} />;
}

export function Screen(props: { backend: Backend; view: View }) {
  const { backend, view } = props;
  const [tab, setTab] = useState<Tab>("peers");
  const [open, setOpen] = useState<string | null>(null);
  if (view.daemon.kind !== "ready" || !view.status) {
    return <DaemonProblem backend={backend} link={view.daemon} />;
  }
  const state = view.status.state;
  if (state === "needs-login" || state === "session-expired" || view.action === "signing-in") {
    return <SignIn backend={backend} view={view} />;
  }
  const peer = open ? view.status.peers.find((p) => p.node_key === open) : undefined;
  const tabs: [Tab, string][] = [
    ["peers", "Peers"],
    ["network", "Network"],
    ["settings", "Settings"],
  ];
  return (
    <div class="app">
      <Header backend={backend} view={view} />
      <nav class="tabs" aria-label="Sections">
        {tabs.map(([t, label]) => (
          <button
            type="button"
            key={t}
            aria-current={tab === t ? "page" : undefined}
            onClick={() => {
              setTab(t);
              setOpen(null);
            }}
          >
            {label}
          </button>
        ))}
      </nav>
      <main class="content">
        {tab === "peers" &&
          (peer ? (
            <PeerDetail backend={backend} peer={peer} onBack={() => setOpen(null)} />
          ) : (
            <>
              {state === "stopped" && (
                <p class="notice" role="status">
                  Disconnected: switch on to reach your peers. The paths below are the last ones used.
                </p>
              )}
              <PeerList peers={view.status.peers} onOpen={setOpen} />
            </>
          ))}
        {tab === "network" && <Network backend={backend} view={view} />}
        {tab === "settings" && <SettingsView backend={backend} view={view} />}
      </main>
    </div>
  );
}
