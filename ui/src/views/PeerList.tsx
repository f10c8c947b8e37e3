// The live peer list: search by name or address, online only, sort; virtualised, so only the
// rows in sight (and a few around them) are in the page, however many peers there are.
import { useLayoutEffect, useMemo, useRef, useState } from "preact/hooks";
import type { PeerStatus } from "../bindings";
import { ago, bytes, pathLabel, pathWhere, rtt } from "../format";

/** Each row's height in rem (fixed, so the list can place rows without measuring them; in rem,
 * so rows grow with the text when a person sets a larger font). */
export const ROW_REM = 4.25;

/** A row's height in CSS pixels at the page's current root font size. */
function rowPx(): number {
  const root = typeof getComputedStyle === "function" ? parseFloat(getComputedStyle(document.documentElement).fontSize) : NaN;
  return ROW_REM * (Number.isFinite(root) && root > 0 ? root : 16);
}
const OVERSCAN = 6;

export type SortKey = "name" | "path" | "rtt" | "traffic";

const PATH_ORDER: Record<string, number> = { direct: 0, relayed: 1, connecting: 2, idle: 3, offline: 4 };

export function filterPeers(peers: PeerStatus[], query: string, onlineOnly: boolean, sort: SortKey): PeerStatus[] {
  const q = query.trim().toLowerCase();
  const shown = peers.filter(
    (p) =>
      (!onlineOnly || p.online) &&
      (q === "" || p.name.toLowerCase().includes(q) || p.dns_name.toLowerCase().includes(q) || p.addresses.some((a) => a.toLowerCase().includes(q))),
  );
  const byName = (a: PeerStatus, b: PeerStatus) => a.name.localeCompare(b.name);
  const cmp: Record<SortKey, (a: PeerStatus, b: PeerStatus) => number> = {
    name: byName,
    path: (a, b) => PATH_ORDER[a.connection] - PATH_ORDER[b.connection] || byName(a, b),
    rtt: (a, b) => (a.rtt_ms ?? Infinity) - (b.rtt_ms ?? Infinity) || byName(a, b),
    traffic: (a, b) => b.rx_bytes + b.tx_bytes - (a.rx_bytes + a.tx_bytes) || byName(a, b),
  };
  return shown.sort(cmp[sort]);
}

export function PeerList(props: { peers: PeerStatus[]; onOpen: (nodeKey: string) => void }) {
  const [query, setQuery] = useState("");
  const [onlineOnly, setOnlineOnly] = useState(false);
  const [sort, setSort] = useState<SortKey>("name");
  const [scrollTop, setScrollTop] = useState(0);
  const [height, setHeight] = useState(600);
  const box = useRef<HTMLDivElement>(null);
  const ROW = rowPx();
  const shown = useMemo(() => filterPeers(props.peers, query, onlineOnly, sort), [props.peers, query, onlineOnly, sort]);

  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    const measure = () => setHeight(el.clientHeight || 600);
    measure();
    if (typeof ResizeObserver === "undefined") return;
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const first = Math.max(0, Math.floor(scrollTop / ROW) - OVERSCAN);
  const last = Math.min(shown.length, Math.ceil((scrollTop + height) / ROW) + OVERSCAN);
  const online = props.peers.filter((p) => p.online).length;

  return (
    <section class="peers" aria-label="Peers">
      <div class="peer-tools">
        <input
          type="search"
          placeholder="Search by name or address"
          aria-label="Search peers by name or address"
          value={query}
          onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
        />
        <label class="check">
          <input type="checkbox" checked={onlineOnly} onChange={(e) => setOnlineOnly((e.target as HTMLInputElement).checked)} />
          Online only
        </label>
        <label class="sort">
          Sort by{" "}
          <select value={sort} onChange={(e) => setSort((e.target as HTMLSelectElement).value as SortKey)}>
            <option value="name">Name</option>
            <option value="path">Path</option>
            <option value="rtt">Latency</option>
            <option value="traffic">Traffic</option>
          </select>
        </label>
        <span class="muted count" aria-live="polite">
          {shown.length === props.peers.length ? `${props.peers.length} peers, ${online} online` : `${shown.length} of ${props.peers.length} peers`}
        </span>
      </div>
      {props.peers.length === 0 ? (
        <p class="empty">No other devices in this network yet.</p>
      ) : shown.length === 0 ? (
        <p class="empty">No peer matches.</p>
      ) : (
        <div class="peer-scroll" ref={box} onScroll={(e) => setScrollTop((e.target as HTMLDivElement).scrollTop)}>
          <ul class="peer-list" style={{ height: `${shown.length * ROW}px` }}>
            {shown.slice(first, last).map((p, i) => (
              <PeerRow key={p.node_key} peer={p} top={(first + i) * ROW} height={ROW} pos={first + i + 1} size={shown.length} onOpen={props.onOpen} />
            ))}
          </ul>
        </div>
      )}
    </section>
  );
}

function PeerRow(props: { peer: PeerStatus; top: number; height: number; pos: number; size: number; onOpen: (k: string) => void }) {
  const p = props.peer;
  const where = pathWhere(p);
  const when = p.online ? ago(p.last_handshake) : ago(p.last_seen);
  return (
    <li style={{ top: `${props.top}px`, height: `${props.height}px` }} aria-setsize={props.size} aria-posinset={props.pos}>
      <button type="button" class="peer-row" data-peer={p.name} onClick={() => props.onOpen(p.node_key)}>
        <span class={`dot ${p.online ? "online" : "offline"}`} aria-hidden="true" />
        <span class="peer-main">
          <span class="peer-name">{p.name}</span>
          <span class="sr-only">{p.online ? ", online, " : ", offline, "}</span>
          <span class="muted mono" title={p.dns_name || undefined}>{p.addresses[0] ?? ""}</span>
        </span>
        <span class="peer-path">
          <span class={`badge path-${p.connection}`}>{pathLabel(p)}</span>
          {where && <span class="muted mono where">{where}</span>}
        </span>
        <span class="peer-nums muted">
          <span>{rtt(p.rtt_ms) ?? "–"}</span>
          <span>
            ↓{bytes(p.rx_bytes)} ↑{bytes(p.tx_bytes)}
          </span>
          <span>{when ? (p.online ? `handshake ${when}` : `seen ${when}`) : p.online ? "" : "never seen"}</span>
        </span>
      </button>
    </li>
  );
}
