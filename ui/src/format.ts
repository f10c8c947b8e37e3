// How numbers, times and paths read in the window.
import type { PeerStatus } from "./bindings";

export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${n} B` : `${v.toFixed(v < 10 ? 1 : 0)} ${units[u]}`;
}

/** "12 s ago", "5 min ago", "3 h ago", "2 days ago"; `now` in ms since the epoch. */
export function ago(rfc3339: string | null | undefined, now: number = Date.now()): string | null {
  if (!rfc3339) return null;
  const t = Date.parse(rfc3339);
  if (Number.isNaN(t)) return null;
  const s = Math.max(0, Math.round((now - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  const d = Math.floor(s / 86400);
  return `${d} day${d === 1 ? "" : "s"} ago`;
}

/** "in 40 min", "in 5 h", "in 3 days"; "now" once past. */
export function until(rfc3339: string | null | undefined, now: number = Date.now()): string | null {
  if (!rfc3339) return null;
  const t = Date.parse(rfc3339);
  if (Number.isNaN(t)) return null;
  const s = Math.round((t - now) / 1000);
  if (s <= 0) return "now";
  if (s < 3600) return `in ${Math.max(1, Math.round(s / 60))} min`;
  if (s < 86400) return `in ${Math.round(s / 3600)} h`;
  const d = Math.round(s / 86400);
  return `in ${d} day${d === 1 ? "" : "s"}`;
}

export function rtt(ms: number | null | undefined): string | null {
  if (ms == null) return null;
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`;
}

/** The path as a person reads it first: Direct, Relayed, Connecting, Idle, Offline. */
export function pathLabel(p: PeerStatus): string {
  switch (p.connection) {
    case "direct":
      return "Direct";
    case "relayed":
      return "Relayed";
    case "connecting":
      return "Connecting";
    case "idle":
      return "Idle";
    case "offline":
      return "Offline";
  }
}

/** Where the path goes: the endpoint when direct, the relay region when relayed. */
export function pathWhere(p: PeerStatus): string | null {
  if (p.connection === "direct") return p.endpoint;
  if (p.connection === "relayed") return p.relay ? `via ${p.relay}` : null;
  if (p.connection === "idle" && p.relay) return `last via ${p.relay}`;
  return null;
}
