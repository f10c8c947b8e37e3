// Settings (start at login, start minimised, connect on start, notifications), routes and
// the exit node, the diagnostics export, and signing out.
import { useState } from "preact/hooks";
import type { Backend } from "../backend";
import type { View } from "../bindings";
import { until } from "../format";
import { Alert, useAction } from "./action";
import { RoutesSettings } from "./RoutesSettings";

type Flag = "start_at_login" | "start_minimised" | "connect_on_start" | "notify_session" | "notify_relayed";

const FLAGS: [Flag, string][] = [
  ["start_at_login", "Start Pinhole when I sign in to this computer"],
  ["start_minimised", "Start minimised (in the tray)"],
  ["connect_on_start", "Connect when the app starts"],
  ["notify_session", "Notify me when my session expires"],
  ["notify_relayed", "Notify me when a peer's direct path falls back to a relay"],
];

export function SettingsView(props: { backend: Backend; view: View }) {
  const { backend, view } = props;
  const [message, setMessage] = useState<string | null>(null);
  const action = useAction();
  const set = (flag: Flag, on: boolean) => action.run(() => backend.setSettings({ ...view.settings, [flag]: on }));
  const exportBundle = async () => {
    setMessage(null);
    const path = await action.run(() => backend.exportDiagnostics());
    if (path) setMessage(`Saved to ${path}`);
  };
  const signOut = () => action.run(() => backend.signOut());
  return (
    <section class="settings" aria-labelledby="settings-title">
      <h2 id="settings-title">Settings</h2>
      <fieldset>
        <legend>App</legend>
        {FLAGS.map(([flag, label]) => (
          <label class="check" key={flag}>
            <input type="checkbox" checked={view.settings[flag]} onChange={(e) => set(flag, (e.target as HTMLInputElement).checked)} />
            {label}
          </label>
        ))}
      </fieldset>
      <RoutesSettings backend={backend} status={view.status} />
      <h3>Diagnostics</h3>
      <p class="muted">One file with the status, a fresh network check and the recent logs of the service and the app, to send to whoever helps you.</p>
      <p>
        <button type="button" onClick={exportBundle} disabled={action.busy}>
          {action.busy ? "Exporting…" : "Export diagnostics"}
        </button>
      </p>
      {message && (
        <p role="status" class="mono">
          {message}
        </p>
      )}
      <h3>Account</h3>
      <p>
        Signed in to <span class="mono">{view.settings.server ?? "a server"}</span>
        {view.status?.self ? ` as ${view.status.self.name}` : ""}.
        {view.status?.self?.expires && ` This device's sign-in expires ${until(view.status.self.expires)}.`}
      </p>
      <p>
        <button type="button" class="danger" onClick={signOut} disabled={view.action != null}>
          Sign out
        </button>
      </p>
      <Alert text={action.error} />
      <p class="muted">
        Pinhole {view.version}
        {view.daemon.kind === "ready" ? `, service ${view.daemon.software}` : ""}
      </p>
    </section>
  );
}
