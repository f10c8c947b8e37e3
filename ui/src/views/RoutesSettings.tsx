// The routes toggle (use the networks peers forward) and the exit-node picker (with "None"),
// showing who offers what; pinholed checks the choice and says why it refuses one.
import type { Backend } from "../backend";
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
  const set = (r: { acceptRoutes?: boolean; exitNode?: string; allowLan?: boolean }) =>
    action.run(() =>
      backend.setRoutes({ acceptRoutes: r.acceptRoutes ?? null, exitNode: r.exitNode ?? null, allowLan: r.allowLan ?? null }),
    );
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
      {me?.routing_error && <p class="error">{me.routing_error}</p>}
      <Alert text={action.error} />
    </fieldset>
  );
}
