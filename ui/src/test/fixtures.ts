// Views as the controller sends them, for each state the window has to show.
import type { PeerStatus, Status, View } from "../bindings";

export const settings = {
  server: "https://pinhole.example.com",
  start_at_login: false,
  start_minimised: false,
  connect_on_start: false,
  notify_session: true,
  notify_relayed: false,
};

export function view(over: Partial<View> = {}): View {
  return {
    daemon: { kind: "ready", software: "pinholed 0.1.0" },
    status: null,
    action: null,
    error: null,
    netcheck: null,
    settings: { ...settings },
    version: "0.1.0",
    ...over,
  };
}

export function status(over: Partial<Status> = {}): Status {
  return {
    state: "connected",
    self: {
      name: "laptop",
      dns_name: "laptop.pinhole.internal",
      node_key: "c2VsZmtleQ==",
      addresses: ["100.64.0.1", "fd7a:115c:a1e0::1"],
      endpoints: ["192.0.2.1:41641"],
      nat: { mapping_varies_by_dest: false, udp: true },
      home_relay: "local",
      policy: false,
    },
    peers: [],
    ...over,
  };
}

export function peer(name: string, over: Partial<PeerStatus> = {}): PeerStatus {
  return {
    name,
    dns_name: `${name}.pinhole.internal`,
    node_key: `key-${name}`,
    addresses: [`100.64.0.${name.length + 10}`],
    online: true,
    connection: "idle",
    endpoint: null,
    relay: null,
    rtt_ms: null,
    path_reason: null,
    last_handshake: null,
    rx_bytes: 0,
    tx_bytes: 0,
    disco_pings_sent: 0,
    filtered_packets: 0,
    ...over,
  };
}

export const direct = peer("server", {
  connection: "direct",
  endpoint: "198.51.100.7:41641",
  endpoint_kind: "stun",
  rtt_ms: 1.3,
  last_handshake: new Date(Date.now() - 12_000).toISOString(),
  rx_bytes: 1536,
  tx_bytes: 4096,
  candidates: [
    { addr: "198.51.100.7:41641", kind: "stun", rtt_ms: 1.3, answering: true, pings_sent: 4, pongs: 3 },
    { addr: "10.0.0.7:41641", kind: "local", rtt_ms: null, answering: false, pings_sent: 4, pongs: 0 },
  ],
  disco_pings_sent: 8,
});

export const relayed = peer("phone", {
  connection: "relayed",
  relay: "local",
  rtt_ms: 24,
  path_reason: "UDP blocked on this network",
  last_handshake: new Date(Date.now() - 30_000).toISOString(),
});

export const offline = peer("old-nas", {
  online: false,
  connection: "offline",
  path_reason: "the peer is not connected to the coordination server",
  last_seen: new Date(Date.now() - 3 * 86_400_000).toISOString(),
});

export function manyPeers(n: number): PeerStatus[] {
  return Array.from({ length: n }, (_, i) => {
    const name = `peer-${String(i).padStart(4, "0")}`;
    return peer(name, {
      node_key: `k${i}`,
      addresses: [`100.64.${Math.floor(i / 250)}.${(i % 250) + 1}`],
      connection: i % 3 === 0 ? "direct" : i % 3 === 1 ? "relayed" : "idle",
      online: i % 10 !== 9,
    });
  });
}
