// One peer: its DNS name, addresses and key, the path in use and why it is not direct when it is not,
// what the account's policy lets this device reach on it (and what it refused from it), every
// candidate endpoint and what pinging it has shown, and a Ping button.
import { useState } from "preact/hooks";
import type { Backend } from "../backend";
import type { PeerStatus, PingReply } from "../bindings";
import { ago, bytes, pathLabel, pathWhere, rtt } from "../format";
import { Alert, useAction } from "./action";
import { Copy } from "./Copy";

export function PeerDetail(props: { backend: Backend; peer: PeerStatus; onBack: () => void }) {
  const { backend, peer: p } = props;
  const pinging = useAction();
  const [reply, setReply] = useState<PingReply | null>(null);
  const ping = async () => {
    setReply(null);
    setReply((await pinging.run(() => backend.ping(p.node_key))) ?? null);
  };
  const where = pathWhere(p);
  const candidates = p.candidates ?? [];
  return (
    <section class="detail" aria-labelledby="peer-title">
      <button type="button" class="back" onClick={props.onBack}>
        ← All peers
      </button>
      <h2 id="peer-title">
        <span class={`dot ${p.online ? "online" : "offline"}`} aria-hidden="true" /> {p.name}
      </h2>
      <dl class="facts">
        <dt>Status</dt>
        <dd>{p.online ? "Online" : `Offline${p.last_seen ? `, last seen ${ago(p.last_seen)}` : ""}`}</dd>
        {p.dns_name && (
          <>
            <dt>Name</dt>
            <dd>
              <Copy backend={backend} text={p.dns_name} label={`name ${p.dns_name}`} class="dns-name" />
            </dd>
          </>
        )}
        <dt>Addresses</dt>
        <dd class="addresses">
          {p.addresses.map((a) => (
            <Copy key={a} backend={backend} text={a} label={`address ${a}`} />
          ))}
        </dd>
        <dt>Path</dt>
        <dd>
          <span class={`badge path-${p.connection}`}>{pathLabel(p)}</span>{" "}
          {where && <span class="mono">{where}</span>}
          {p.connection === "direct" && p.endpoint_kind && <span class="muted"> ({p.endpoint_kind} endpoint)</span>}
        </dd>
        {p.path_reason && (
          <>
            <dt>{p.connection === "relayed" ? "Why not direct" : "Why"}</dt>
            <dd class="reason">{p.path_reason}</dd>
          </>
        )}
        <dt>Latency</dt>
        <dd>{rtt(p.rtt_ms) ?? "not measured yet"}</dd>
        <dt>Last handshake</dt>
        <dd>{ago(p.last_handshake) ?? "none yet"}</dd>
        <dt>Traffic</dt>
        <dd>
          received {bytes(p.rx_bytes)}, sent {bytes(p.tx_bytes)}
        </dd>
        {p.may_reach != null && (
          <>
            <dt>Access</dt>
            <dd class="access">
              You may reach {p.may_reach}
              {p.tags?.length ? ` (${p.tags.join(", ")})` : ""}
            </dd>
          </>
        )}
        {p.filtered_packets > 0 && (
          <>
            <dt>Refused</dt>
            <dd class="refused">
              {p.filtered_packets} {p.filtered_packets === 1 ? "packet" : "packets"} refused by the policy
            </dd>
          </>
        )}
        <dt>Key</dt>
        <dd>
          <Copy backend={backend} text={p.node_key} label="the peer's key" class="key" />
        </dd>
      </dl>
      <div class="ping">
        <button type="button" class="primary" onClick={ping} disabled={pinging.busy || !p.online}>
          {pinging.busy ? "Pinging…" : "Ping"}
        </button>
        <span role="status" aria-live="polite" class="ping-result">
          {reply &&
            `Reply in ${rtt(reply.rtt_ms)} over ${reply.connection === "direct" ? `a direct path (${reply.endpoint ?? "?"})` : reply.connection === "relayed" ? `the relay ${reply.relay ?? ""}` : reply.connection}`}
        </span>
        <Alert text={pinging.error} />
      </div>
      <h3>Candidate endpoints</h3>
      {candidates.length === 0 ? (
        <p class="muted">None yet: the peer has published no endpoints, or nothing has been tried.</p>
      ) : (
        <table class="candidates">
          <thead>
            <tr>
              <th scope="col">Address</th>
              <th scope="col">Kind</th>
              <th scope="col">Answering</th>
              <th scope="col">Latency</th>
              <th scope="col">Pings / answers</th>
            </tr>
          </thead>
          <tbody>
            {candidates.map((c) => (
              <tr key={c.addr} class={p.endpoint === c.addr ? "in-use" : ""}>
                <td class="mono">
                  {c.addr}
                  {p.connection === "direct" && p.endpoint === c.addr ? " (in use)" : ""}
                </td>
                <td>{c.kind}</td>
                <td>{c.answering ? "yes" : "no"}</td>
                <td>{rtt(c.rtt_ms) ?? "–"}</td>
                <td>
                  {c.pings_sent} / {c.pongs}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <p class="muted">{p.disco_pings_sent} discovery pings sent to this peer in all.</p>
    </section>
  );
}
