// This device's network, from pinholed's netcheck: UDP, the public address, the NAT's kind,
// port mapping, the home relay and each region's latency as a bar chart; and names: the DNS
// suffix peers answer under, where pinholed answers, and where other names go.
import type { Backend } from "../backend";
import type { View } from "../bindings";
import { rtt } from "../format";
import { Alert, useAction } from "./action";

function yesNo(v: boolean | null | undefined, yes: string, no: string): string {
  return v == null ? "unknown" : v ? yes : no;
}

/// What the NAT is, from the netcheck: no NAT when the public address is one of this host's own;
/// a hard NAT when the mapping varies by destination; an easy one when it does not.
export function natKind(r: {
  mapping_varies_by_dest: boolean | null | undefined;
  public_endpoints: string[];
  local_endpoints: string[];
}): string {
  const own = r.public_endpoints.some((p) => r.local_endpoints.includes(p));
  if (r.mapping_varies_by_dest === true) {
    return "hard NAT: the mapping varies by destination (direct paths need the peer's NAT to be easy, or a port mapping)";
  }
  if (r.mapping_varies_by_dest === false) {
    return own
      ? "no NAT: the public address is this device's own"
      : "easy NAT: the mapping is the same for every destination (hole punching works)";
  }
  return own ? "likely no NAT (one STUN answer, and it is this device's own address)" : "unknown (fewer than two STUN answers)";
}

export function Network(props: { backend: Backend; view: View }) {
  const { backend, view } = props;
  const check = useAction();
  const report = view.netcheck;
  const me = view.status?.self;
  const regions = report?.regions ?? [];
  const worst = Math.max(1, ...regions.map((r) => r.latency_ms ?? 0));
  const dns = view.status?.dns;
  return (
    <section class="network" aria-labelledby="network-title">
      <h2 id="network-title">Network</h2>
      <p>
        <button type="button" class="primary" onClick={() => check.run(() => backend.netcheck())} disabled={check.busy}>
          {check.busy ? "Checking…" : report ? "Check again" : "Check the network"}
        </button>
      </p>
      <Alert text={check.error} />
      {!report && me && (
        <p class="muted">
          Last known: UDP {yesNo(me.nat.udp, "works", "blocked")}, NAT mapping{" "}
          {yesNo(me.nat.mapping_varies_by_dest, "varies by destination (hard NAT)", "the same for every destination")}, home relay{" "}
          {me.home_relay ?? "none"}.
        </p>
      )}
      {dns && (
        <>
          <h3>Names</h3>
          <dl class="facts names">
            <dt>Peers answer as</dt>
            <dd class="mono">NAME.{dns.suffix}</dd>
            <dt>Answered by</dt>
            <dd class="mono">{dns.servers.join(", ")}</dd>
            <dt>System resolver</dt>
            <dd>{dns.os}</dd>
            <dt>Other names</dt>
            <dd class="mono">{dns.upstreams.join(", ") || "not forwarded"}</dd>
            <dt>Questions</dt>
            <dd>
              {dns.answered} answered from the map, {dns.forwarded} forwarded
            </dd>
          </dl>
        </>
      )}
      {report && (
        <>
          <dl class="facts">
            <dt>UDP</dt>
            <dd>{yesNo(report.udp, "works", "blocked: peers are reached through a relay")}</dd>
            <dt>Public address</dt>
            <dd class="mono">{report.public_endpoints.join(", ") || "unknown"}</dd>
            <dt>NAT</dt>
            <dd>
              {natKind(report)}
            </dd>
            <dt>Port mapping</dt>
            <dd>
              {report.port_mapping.protocol
                ? `${report.port_mapping.protocol}: ${report.port_mapping.external ?? "?"} via ${report.port_mapping.gateway ?? "the gateway"}`
                : `none${report.port_mapping.error ? ` (${report.port_mapping.error})` : ""}`}
            </dd>
            <dt>IPv4 / IPv6</dt>
            <dd>
              {yesNo(report.ipv4, "yes", "no")} / {yesNo(report.ipv6, "yes", "no")}
            </dd>
            <dt>Hairpinning</dt>
            <dd>{yesNo(report.hairpinning, "yes", "no")}</dd>
            <dt>Home relay</dt>
            <dd>{me?.home_relay ?? report.preferred_relay ?? "none"}</dd>
            <dt>Coordination server</dt>
            <dd>
              {report.control.url ?? "none"}:{" "}
              {report.control.reachable ? `reachable, ${rtt(report.control.latency_ms) ?? "?"}` : `unreachable${report.control.error ? ` (${report.control.error})` : ""}`}
            </dd>
          </dl>
          <h3>Relay regions</h3>
          <ul class="regions" aria-label="Latency to each relay region">
            {regions.map((r) => (
              <li key={r.code}>
                <span class="region-name">
                  {r.name} <span class="muted">({r.code})</span>
                  {r.code === report.preferred_relay ? " ★" : ""}
                </span>
                <span class="bar" aria-hidden="true">
                  <span style={{ width: `${r.latency_ms == null ? 0 : Math.max(2, (100 * r.latency_ms) / worst)}%` }} />
                </span>
                <span class="region-ms">{r.latency_ms == null ? r.error ?? "no answer" : rtt(r.latency_ms)}</span>
              </li>
            ))}
          </ul>
        </>
      )}
    </section>
  );
}
