// Always at the top: the connect switch with the state in words, and this device's name and
// overlay addresses (click to copy).
import type { Backend } from "../backend";
import type { View } from "../bindings";
import { Alert, useAction } from "./action";
import { Copy } from "./Copy";

/** pinholed's reason for a tunnel that is down only because it was switched off: it points at
 * the CLI (`pinhole up`), which the switch replaces here. */
function switchedOff(view: View): boolean {
  const s = view.status;
  return s?.state === "stopped" && (!s.reason || s.reason.includes("pinhole up"));
}

export function stateText(view: View): string {
  switch (view.action) {
    case "connecting":
      return "Connecting…";
    case "disconnecting":
      return "Disconnecting…";
    case "signing-out":
      return "Signing out…";
    default:
      break;
  }
  switch (view.status?.state) {
    case "connected":
      return "Connected";
    case "connecting":
      return "Connecting…";
    case "stopped":
      return switchedOff(view) ? "Disconnected" : "Tunnel down";
    case "session-expired":
      return "Session expired: sign in again";
    case "needs-login":
      return "Signed out";
    default:
      return "";
  }
}

export function Header(props: { backend: Backend; view: View }) {
  const { backend, view } = props;
  const switching = useAction();
  const state = view.status?.state;
  const on = state === "connected" || state === "connecting";
  const me = view.status?.self ?? null;
  const toggle = () => switching.run(() => backend.setConnected(!on));
  const reason = switchedOff(view) ? null : view.status?.reason;
  return (
    <header class="header">
      <div class="switch-line">
        <button
          type="button"
          role="switch"
          aria-checked={on}
          aria-label="Connected"
          class={`switch ${on ? "on" : ""}`}
          disabled={view.action != null}
          onClick={toggle}
        >
          <span class="knob" aria-hidden="true" />
        </button>
        <div>
          <div class={`state state-${state ?? "unknown"}`} aria-live="polite">
            {stateText(view)}
          </div>
          {reason && <div class="muted reason">{reason}</div>}
        </div>
      </div>
      {me && (
        <div class="me">
          <div class="me-name" title={me.dns_name || undefined}>{me.name}</div>
          <div class="addresses">
            {me.addresses.map((a) => (
              <Copy key={a} backend={backend} text={a} label={`address ${a}`} />
            ))}
          </div>
        </div>
      )}
      <Alert text={switching.error ?? view.error?.message} />
    </header>
  );
}
