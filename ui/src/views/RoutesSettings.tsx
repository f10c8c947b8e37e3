// The routes toggle (use the networks peers forward) and the exit-node picker (with "None"),
// showing who offers what; and what this device offers (networks it forwards, being an exit
// node) with the server's approval. pinholed checks every choice and says why it refuses one.
import { useState } from "preact/hooks";
import type { Backend, RouteChoice } from "../backend";
import type { Status } from "../bindings";
import { Alert, useAction } from "./action";

export function RoutesSettings(props: { backend: Backend; status: Status | null }) {
  const { backend, status } = props;
  const action = useAction();
  const me = status?.self ?? null;
  const peers = status?.peers ?? [];
  const routers = peers.filter((p) => (p.routes ?? []).some((r) => !r.endsWith("/0")));
  const exits = peers.filter((p) => p.exit_node);
  const exit = me?.exit_node ?? null;
  const connected = status?.state === "connected";
  // Resolves to true once pinholed took it (undefined: refused, and the alert says why).
  const set = (r: Partial<RouteChoice>) =>
    action.run(async () => {
      await backend.setRoutes({
        acceptRoutes: r.acceptRoutes ?? null,
        exitNode: r.exitNode ?? null,
        allowLan: r.allowLan ?? null,
        advertiseRoutes: r.advertiseRoutes ?? null,
        advertiseExitNode: r.advertiseExitNode ?? null,
      });
      return true;
    });
  const offered = (me?.advertised_routes ?? []).filter((r) => !r.endsWith("/0"));
  const offersExit = (me?.advertised_routes ?? []).includes("0.0.0.0/0");
  const approved = me?.approved_routes ?? [];
  const [networks, setNetworks] = useState<string | null>(null);
  const typed = networks ?? offered.join(", ");
  const saveNetworks = () => {
    const list = typed
      .split(/[\s,]+/)
      .map((n) => n.trim())
      .filter((n) => n !== "");
    // Refused: the text stays for the person to correct.
    set({ advertiseRoutes: list }).then((ok) => ok && setNetworks(null));
  };
  return (
    <fieldset aria-labelledby="routes-title">
      <legend id="routes-title">Routes</legend>
      <label class="check">
        <input
          type="checkbox"
          checked={me?.accept_routes ?? false}
          disabled={!connected || action.busy}
          onChange={(e) => set({ acceptRoutes: (e.target as HTMLInputElement).checked })}
        />
        Use the networks my peers forward
      </label>
      {routers.length === 0 ? (
        <p class="muted">No peer forwards a network.</p>
      ) : (
        <ul aria-label="Networks peers forward">
          {routers.map((p) => (
            <li key={p.node_key}>
              <strong>{p.name}</strong>:{" "}
              {(p.routes ?? [])
                .filter((r) => !r.endsWith("/0"))
                .map((r) => ((p.routes_in_use ?? []).includes(r) ? `${r} (in use)` : r))
                .join(", ")}
            </li>
          ))}
        </ul>
      )}
      <label>
        Exit node{" "}
        <select
          aria-label="Exit node"
          value={exit?.name ?? ""}
          disabled={!connected || action.busy}
          onChange={(e) => set({ exitNode: (e.target as HTMLSelectElement).value })}
        >
          <option value="">None</option>
          {exits.map((p) => (
            <option key={p.node_key} value={p.name}>
              {p.name}
              {p.online ? "" : " (offline)"}
            </option>
          ))}
          {exit && !exits.some((p) => p.name === exit.name) && <option value={exit.name}>{exit.name} (not an exit node now)</option>}
        </select>
      </label>
      {exit && (
        <p role="status">
          {exit.problem ?? `All internet traffic goes through ${exit.name}.`}
        </p>
      )}
      <label class="check">
        <input
          type="checkbox"
          checked={exit?.allow_lan ?? false}
          disabled={!connected || action.busy || !exit}
          onChange={(e) => set({ allowLan: (e.target as HTMLInputElement).checked })}
        />
        Reach my local network directly while using an exit node
      </label>
      <h4>This device</h4>
      <label>
        Networks this device forwards for its peers{" "}
        <input
          type="text"
          class="mono"
          placeholder="192.168.1.0/24, fd00:1::/64"
          value={typed}
          disabled={!connected || action.busy}
          onInput={(e) => setNetworks((e.target as HTMLInputElement).value)}
        />
      </label>{" "}
      <button type="button" onClick={saveNetworks} disabled={!connected || action.busy || networks === null}>
        Offer
      </button>
      <label class="check">
        <input
          type="checkbox"
          checked={offersExit}
          disabled={!connected || action.busy}
          onChange={(e) => set({ advertiseExitNode: (e.target as HTMLInputElement).checked })}
        />
        Offer this device as an exit node
      </label>
      {(offered.length > 0 || offersExit) && (
        <ul aria-label="What this device offers">
          {offered.map((r) => (
            <li key={r}>
              {r}: {approved.includes(r) ? "approved" : "waiting for the server's approval"}
            </li>
          ))}
          {offersExit && <li>exit node: {approved.includes("0.0.0.0/0") ? "approved" : "waiting for the server's approval"}</li>}
        </ul>
      )}
      {me?.routing_error && <p class="error">{me.routing_error}</p>}
      <Alert text={action.error} />
    </fieldset>
  );
}
