// Each screen in each state, through the real App over mocked Tauri IPC.
import { fireEvent, screen, waitFor, within } from "@testing-library/preact";
import { describe, expect, it } from "vitest";
import { start } from "../test/harness";
import { ROW_REM } from "./PeerList";
import { natKind } from "./Network";
import { direct, manyPeers, offline, relayed, status, view } from "../test/fixtures";

describe("when pinholed cannot be used", () => {
  it("says it is not running, with the command that starts it, and tries again on request", async () => {
    const { calls } = start(
      view({ daemon: { kind: "not-running", socket: "/run/pinhole/pinholed.sock", fix: "sudo systemctl enable --now pinholed" } }),
    );
    await screen.findByRole("heading", { name: "The Pinhole service is not running" });
    expect(screen.getByText(/nothing answers at \/run\/pinhole\/pinholed.sock/)).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: /^Copy the command/ }));
    fireEvent.click(screen.getByRole("button", { name: "Try again" }));
    await waitFor(() => expect(calls.map((c) => c.cmd)).toContain("retry"));
    expect(calls.find((c) => c.cmd === "copy_text")?.args).toEqual({ text: "sudo systemctl enable --now pinholed" });
  });

  it("says this user is not allowed, with the group command", async () => {
    start(
      view({
        daemon: {
          kind: "not-allowed",
          detail: "not allowed to talk to pinholed at /run/pinhole/pinholed.sock",
          fix: "sudo usermod -aG pinhole $USER   (then sign out of your desktop and in again)",
          joined_since_login: false,
        },
      }),
    );
    await screen.findByRole("heading", { name: /not allowed to use Pinhole/ });
    expect(screen.getByText(/sudo usermod -aG pinhole \$USER/)).toBeTruthy();
  });

  it("tells a user the installer just added to the group to log in again", async () => {
    start(
      view({
        daemon: {
          kind: "not-allowed",
          detail: "not allowed to talk to pinholed at /run/pinhole/pinholed.sock",
          fix: "Sign out of your desktop and in again (in a terminal until then: newgrp pinhole)",
          joined_since_login: true,
        },
      }),
    );
    await screen.findByRole("heading", { name: "Pinhole can be used after your next login" });
    expect(screen.getByText(/takes effect when you next log in/)).toBeTruthy();
    expect(screen.queryByText(/Add yourself/)).toBeNull();
  });

  it("says the versions differ", async () => {
    start(view({ daemon: { kind: "wrong-version", message: "pinholed speaks version 2, this app 1", fix: "Install the same release" } }));
    await screen.findByRole("heading", { name: "The app and the Pinhole service do not match" });
    expect(screen.getByText(/version 2, this app 1/)).toBeTruthy();
  });

  it("shows that it is looking while it connects", async () => {
    start(view({ daemon: { kind: "connecting" } }));
    await screen.findByText("Looking for the Pinhole service…");
  });
});

describe("signing in", () => {
  it("offers the remembered server and signs in through the browser", async () => {
    const { calls } = start(view({ status: status({ state: "needs-login", self: null }) }));
    const server = (await screen.findByLabelText("Server address")) as HTMLInputElement;
    expect(server.value).toBe("https://pinhole.example.com");
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    await waitFor(() =>
      expect(calls.find((c) => c.cmd === "sign_in")?.args).toEqual({ server: "https://pinhole.example.com", authKey: null }),
    );
  });

  it("signs in with an auth key and shows why the server refused", async () => {
    const { calls } = start(view({ status: status({ state: "needs-login", self: null }) }), {
      sign_in: () => {
        throw { code: "login-failed", message: "cannot reach the coordination server: connection refused" };
      },
    });
    fireEvent.click(await screen.findByLabelText("With an auth key"));
    fireEvent.input(screen.getByLabelText("Auth key"), { target: { value: "phk_secret" } });
    fireEvent.click(screen.getByRole("button", { name: "Sign in" }));
    const alert = await screen.findByRole("alert");
    expect(alert.textContent).toContain("cannot reach the coordination server");
    expect(calls.find((c) => c.cmd === "sign_in")?.args).toEqual({ server: "https://pinhole.example.com", authKey: "phk_secret" });
  });

  it("shows the code and waits for the browser, with copy and cancel", async () => {
    const { calls } = start(
      view({
        action: "signing-in",
        status: status({ state: "needs-login", self: null, login: { url: "https://pinhole.example.com/device", code: "ABCD-EFGH" } }),
      }),
    );
    await screen.findByText("ABCD-EFGH");
    expect(screen.getByText(/Waiting for your browser/)).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Copy the sign-in code: ABCD-EFGH" }));
    fireEvent.click(screen.getByRole("button", { name: "Cancel" }));
    await waitFor(() => expect(calls.map((c) => c.cmd)).toContain("cancel_sign_in"));
    expect(calls.find((c) => c.cmd === "copy_text")?.args).toEqual({ text: "ABCD-EFGH" });
  });

  it("tells an expired session to sign in again", async () => {
    start(view({ status: status({ state: "session-expired" }) }));
    await screen.findByText(/Your session has expired/);
  });
});

describe("the main screen", () => {
  it("shows the state, this device and every peer with its path", async () => {
    const { calls } = start(view({ status: status({ peers: [direct, relayed, offline] }) }));
    await screen.findByText("Connected");
    expect(screen.getByRole("switch", { name: "Connected" }).getAttribute("aria-checked")).toBe("true");
    expect(screen.getByText("laptop")).toBeTruthy();
    expect(screen.getByRole("button", { name: "Copy address 100.64.0.1: 100.64.0.1" })).toBeTruthy();
    const list = screen.getByRole("list");
    const row = (name: RegExp) => within(list).getByRole("button", { name });
    expect(row(/^server\W+online/).textContent).toContain("Direct198.51.100.7:41641");
    expect(row(/^phone\W+online/).textContent).toContain("Relayedvia local");
    expect(row(/^old-nas\W+offline/).textContent).toContain("Offline");
    expect(within(list).getByText(/seen 3 days ago/)).toBeTruthy();
    fireEvent.click(screen.getByRole("switch"));
    await waitFor(() => expect(calls.find((c) => c.cmd === "set_connected")?.args).toEqual({ on: false }));
  });

  it("shows connecting and disconnected", async () => {
    const { push } = start(view({ status: status({ state: "connecting", reason: "waiting for the network map" }) }));
    await screen.findByText("Connecting…");
    expect(screen.getByText("waiting for the network map")).toBeTruthy();
    await push(view({ status: status({ state: "stopped", reason: "the tunnel is down: `pinhole up` connects" }) }));
    await screen.findByText("Disconnected");
    expect(screen.getByRole("switch").getAttribute("aria-checked")).toBe("false");
    expect(screen.getByText(/switch on to reach your peers/)).toBeTruthy();
    expect(screen.queryByText(/pinhole up/)).toBeNull();
    await push(view({ status: status({ state: "stopped", reason: "cannot create the TUN device: permission denied" }) }));
    await screen.findByText("Tunnel down");
    expect(screen.getByText("cannot create the TUN device: permission denied")).toBeTruthy();
  });

  it("follows pushed changes without asking", async () => {
    const { push, calls } = start(view({ status: status({ peers: [relayed] }) }));
    await screen.findByText("Relayed");
    await push(view({ status: status({ peers: [{ ...relayed, connection: "direct", endpoint: "203.0.113.9:41641", relay: null, path_reason: null }] }) }));
    await screen.findByText("Direct");
    expect(screen.queryByText("Relayed")).toBeNull();
    expect(calls.filter((c) => c.cmd === "get_view").length).toBe(1);
  });

  it("opens a relayed peer: why not direct, its candidates, and a ping with the path it took", async () => {
    const { calls } = start(view({ status: status({ peers: [direct, relayed] }) }), {
      ping: () => ({ peer: "server", address: "100.64.0.16", rtt_ms: 1.25, connection: "direct", endpoint: "198.51.100.7:41641", relay: null }),
    });
    fireEvent.click(await screen.findByRole("button", { name: /^phone/ }));
    await screen.findByRole("heading", { name: /phone/ });
    expect(screen.getByText("Why not direct")).toBeTruthy();
    expect(screen.getByText("UDP blocked on this network")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "← All peers" }));
    fireEvent.click(await screen.findByRole("button", { name: /^server/ }));
    await screen.findByRole("table");
    expect(screen.getByText("198.51.100.7:41641 (in use)")).toBeTruthy();
    expect(screen.getByRole("button", { name: /^Copy the peer's key: key-server/ })).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Copy name server.pinhole.internal: server.pinhole.internal" }));
    await waitFor(() => expect(calls.find((c) => c.cmd === "copy_text")?.args).toEqual({ text: "server.pinhole.internal" }));
    fireEvent.click(screen.getByRole("button", { name: "Ping" }));
    await screen.findByText("Reply in 1.3 ms over a direct path (198.51.100.7:41641)");
    expect(calls.find((c) => c.cmd === "ping")?.args).toEqual({ peer: "key-server" });
  });

  it("says what the policy lets this device reach on a peer, and what it refused", async () => {
    const db = { ...direct, name: "db", tags: ["tag:server"], may_reach: "ports 22 and 443", filtered_packets: 3 };
    start(view({ status: status({ peers: [db, relayed] }) }));
    fireEvent.click(await screen.findByRole("button", { name: /^db/ }));
    await screen.findByRole("heading", { name: /db/ });
    expect(screen.getByText("You may reach ports 22 and 443 (tag:server)")).toBeTruthy();
    expect(screen.getByText("3 packets refused by the policy")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "← All peers" }));
    fireEvent.click(await screen.findByRole("button", { name: /^phone/ }));
    await screen.findByRole("heading", { name: /phone/ });
    // No policy in the account: nothing to say.
    expect(screen.queryByText(/You may reach/)).toBeNull();
    expect(screen.queryByText(/refused by the policy/)).toBeNull();
  });

  it("says why a ping failed", async () => {
    start(view({ status: status({ peers: [direct] }) }), {
      ping: () => {
        throw { code: "ping-timeout", message: "no reply from server within 3 s" };
      },
    });
    fireEvent.click(await screen.findByRole("button", { name: /^server/ }));
    fireEvent.click(await screen.findByRole("button", { name: "Ping" }));
    expect((await screen.findByRole("alert")).textContent).toBe("no reply from server within 3 s");
  });

  it("keeps 1,000 peers smooth: only the rows in sight are in the page; search and filter work", async () => {
    const peers = manyPeers(1000);
    start(view({ status: status({ peers }) }));
    await screen.findByText("1000 peers, 900 online");
    const rows = () => screen.getAllByRole("listitem");
    expect(rows().length).toBeLessThan(40);
    expect(rows()[0].textContent).toContain("peer-0000");
    const scroller = document.querySelector(".peer-scroll") as HTMLDivElement;
    scroller.scrollTop = ROW_REM * 16 * 500;
    fireEvent.scroll(scroller);
    await waitFor(() => expect(screen.getByText("peer-0500")).toBeTruthy());
    expect(screen.queryByText("peer-0000")).toBeNull();
    expect(rows().length).toBeLessThan(40);
    fireEvent.input(screen.getByRole("searchbox"), { target: { value: "peer-0999" } });
    await screen.findByText("1 of 1000 peers");
    fireEvent.input(screen.getByRole("searchbox"), { target: { value: "100.64.3." } });
    await screen.findByText("250 of 1000 peers");
    fireEvent.input(screen.getByRole("searchbox"), { target: { value: "" } });
    fireEvent.click(screen.getByLabelText("Online only"));
    await screen.findByText("900 of 1000 peers");
  });

  it("sorts by path: direct first, then relayed", async () => {
    start(view({ status: status({ peers: [offline, relayed, direct] }) }));
    fireEvent.change(await screen.findByRole("combobox"), { target: { value: "path" } });
    await waitFor(() => {
      const names = screen.getAllByRole("listitem").map((li) => li.querySelector(".peer-name")?.textContent);
      expect(names).toEqual(["server", "phone", "old-nas"]);
    });
  });
});

describe("the NAT's kind", () => {
  const base = { local_endpoints: ["10.0.0.2:41641"], public_endpoints: ["192.0.2.1:41641"] };
  it("says easy, hard, none or unknown, and why", () => {
    expect(natKind({ ...base, mapping_varies_by_dest: false })).toMatch(/^easy NAT/);
    expect(natKind({ ...base, mapping_varies_by_dest: true })).toMatch(/^hard NAT/);
    expect(natKind({ ...base, mapping_varies_by_dest: null })).toMatch(/^unknown \(fewer than two/);
    const publicHost = { local_endpoints: ["192.0.2.1:41641"], public_endpoints: ["192.0.2.1:41641"] };
    expect(natKind({ ...publicHost, mapping_varies_by_dest: false })).toMatch(/^no NAT/);
  });
});

describe("the network view", () => {
  it("runs a check and shows UDP, the NAT and each region's latency", async () => {
    const report = {
      udp: true,
      port: 41641,
      local_endpoints: ["10.0.0.2:41641"],
      public_endpoints: ["192.0.2.1:41641"],
      mapping_varies_by_dest: true,
      ipv4: true,
      ipv6: null,
      hairpinning: false,
      port_mapping: { protocol: null, external: null, gateway: null, error: "no gateway answered" },
      regions: [
        { code: "local", name: "embedded", latency_ms: 0.4, public_endpoint: "192.0.2.1:41641", error: null },
        { code: "fra", name: "Frankfurt", latency_ms: null, public_endpoint: null, error: "no answer" },
      ],
      preferred_relay: "local",
      control: { url: "https://pinhole.example.com", reachable: true, latency_ms: 2.5, error: null },
    };
    const dns = { suffix: "corp.example", servers: ["100.100.100.100"], upstreams: ["127.0.0.53:53"], os: "/etc/resolv.conf (managed by pinholed)", answered: 12, forwarded: 3 };
    const { calls, push } = start(view({ status: status({ dns }) }), { netcheck: () => report });
    fireEvent.click(await screen.findByRole("button", { name: "Network" }));
    expect(screen.getByText("NAME.corp.example")).toBeTruthy();
    expect(screen.getByText("100.100.100.100")).toBeTruthy();
    expect(screen.getByText("12 answered from the map, 3 forwarded")).toBeTruthy();
    expect(screen.getByText("/etc/resolv.conf (managed by pinholed)")).toBeTruthy();
    fireEvent.click(screen.getByRole("button", { name: "Check the network" }));
    await waitFor(() => expect(calls.map((c) => c.cmd)).toContain("netcheck"));
    await push(view({ status: status(), netcheck: report }));
    await screen.findByText(/hard NAT: the mapping varies by destination/);
    expect(screen.getByText("works")).toBeTruthy();
    expect(screen.getByText(/none \(no gateway answered\)/)).toBeTruthy();
    const regions = screen.getByRole("list", { name: "Latency to each relay region" });
    expect(within(regions).getByText("0.4 ms")).toBeTruthy();
    expect(within(regions).getByText("no answer")).toBeTruthy();
  });
});

describe("settings", () => {
  it("saves a changed setting, exports diagnostics and signs out", async () => {
    const expires = new Date(Date.now() + 3 * 86_400_000 + 60_000).toISOString();
    const s = status();
    const { calls } = start(view({ status: { ...s, self: s.self && { ...s.self, expires } } }), {
      export_diagnostics: () => "/home/me/Downloads/pinhole-diagnostics.json",
    });
    fireEvent.click(await screen.findByRole("button", { name: "Settings" }));
    expect(screen.getByText(/sign-in expires in 3 days/)).toBeTruthy();
    fireEvent.click(screen.getByLabelText("Connect when the app starts"));
    await waitFor(() =>
      expect((calls.find((c) => c.cmd === "set_settings")?.args.settings as { connect_on_start: boolean }).connect_on_start).toBe(true),
    );
    fireEvent.click(screen.getByRole("button", { name: "Export diagnostics" }));
    await screen.findByText("Saved to /home/me/Downloads/pinhole-diagnostics.json");
    fireEvent.click(screen.getByRole("button", { name: "Sign out" }));
    await waitFor(() => expect(calls.map((c) => c.cmd)).toContain("sign_out"));
  });
});
