// The routes toggle and the exit-node picker, through the real App over mocked Tauri IPC.
import { fireEvent, screen, waitFor, within } from "@testing-library/preact";
import { describe, expect, it } from "vitest";
import { start } from "../test/harness";
import { peer, status, view } from "../test/fixtures";

const nas = peer("nas", { routes: ["192.168.1.0/24"], routes_in_use: ["192.168.1.0/24"] });
const exitB = peer("exit-b", { routes: ["0.0.0.0/0", "::/0"], exit_node: true });
const exitC = peer("exit-c", { routes: ["0.0.0.0/0", "::/0"], exit_node: true, online: false });

describe("routes and the exit node", () => {
  it("shows who forwards what and sends the toggle and the chosen exit node to pinholed", async () => {
    const s = status({ peers: [nas, exitB, exitC, peer("phone")] });
    const { calls, push } = start(view({ status: s }));
    fireEvent.click(await screen.findByRole("button", { name: "Settings" }));
    const list = screen.getByRole("list", { name: "Networks peers forward" });
    expect(within(list).getByText(/192\.168\.1\.0\/24 \(in use\)/)).toBeTruthy();
    const picker = screen.getByLabelText("Exit node") as HTMLSelectElement;
    const options = Array.from(picker.options).map((o) => o.text);
    expect(options).toEqual(["None", "exit-b", "exit-c (offline)"]);

    fireEvent.click(screen.getByLabelText("Use the networks my peers forward"));
    await waitFor(() =>
      expect(calls.find((c) => c.cmd === "set_routes")?.args).toEqual({
        acceptRoutes: true,
        exitNode: null,
        allowLan: null,
        advertiseRoutes: null,
        advertiseExitNode: null,
      }),
    );
    fireEvent.change(picker, { target: { value: "exit-b" } });
    await waitFor(() =>
      expect(calls.filter((c) => c.cmd === "set_routes").map((c) => c.args.exitNode)).toContain("exit-b"),
    );

    // pinholed's status then says it is in use; "None" turns it off.
    await push(
      view({
        status: { ...s, self: s.self && { ...s.self, exit_node: { name: "exit-b", in_use: true, allow_lan: false } } },
      }),
    );
    expect(screen.getByText("All internet traffic goes through exit-b.")).toBeTruthy();
    fireEvent.click(screen.getByLabelText("Reach my local network directly while using an exit node"));
    await waitFor(() => expect(calls.map((c) => c.args.allowLan)).toContain(true));
    fireEvent.change(screen.getByLabelText("Exit node"), { target: { value: "" } });
    await waitFor(() => expect(calls.map((c) => c.args.exitNode)).toContain(""));
  });

  it("shows pinholed's refusal and why an exit node cannot be used", async () => {
    const s = status({ peers: [exitB] });
    start(
      view({
        status: {
          ...s,
          self: s.self && {
            ...s.self,
            exit_node: { name: "exit-b", in_use: false, allow_lan: false, problem: "the exit node exit-b is offline: internet traffic is dropped" },
          },
        },
      }),
      {
        set_routes: () => {
          throw { message: "exit-b is not an exit node" };
        },
      },
    );
    fireEvent.click(await screen.findByRole("button", { name: "Settings" }));
    expect(screen.getByText(/the exit node exit-b is offline/)).toBeTruthy();
    fireEvent.click(screen.getByLabelText("Use the networks my peers forward"));
    await screen.findByText("exit-b is not an exit node");
  });

  it("offers this device's networks and exit node, with the server's approval, and keeps a refused entry", async () => {
    const s = status();
    let refuse = true;
    const { calls, push } = start(view({ status: s }), {
      set_routes: (args) => {
        if (refuse && args.advertiseRoutes) throw { message: '"192.168.1.5/24" has host bits set: the network is 192.168.1.0/24' };
        return null;
      },
    });
    fireEvent.click(await screen.findByRole("button", { name: "Settings" }));
    const input = screen.getByLabelText(/Networks this device forwards/) as HTMLInputElement;
    fireEvent.input(input, { target: { value: "192.168.1.5/24" } });
    fireEvent.click(screen.getByRole("button", { name: "Offer" }));
    await screen.findByText(/has host bits set/);
    expect(input.value).toBe("192.168.1.5/24");
    refuse = false;
    fireEvent.input(input, { target: { value: "192.168.1.0/24, fd00:1::/64" } });
    fireEvent.click(screen.getByRole("button", { name: "Offer" }));
    await waitFor(() =>
      expect(calls.filter((c) => c.cmd === "set_routes").map((c) => c.args.advertiseRoutes)).toContainEqual(["192.168.1.0/24", "fd00:1::/64"]),
    );
    fireEvent.click(screen.getByLabelText("Offer this device as an exit node"));
    await waitFor(() => expect(calls.map((c) => c.args.advertiseExitNode)).toContain(true));
    await push(
      view({
        status: {
          ...s,
          self: s.self && {
            ...s.self,
            advertised_routes: ["192.168.1.0/24", "0.0.0.0/0", "::/0"],
            approved_routes: ["192.168.1.0/24"],
          },
        },
      }),
    );
    const mine = screen.getByRole("list", { name: "What this device offers" });
    expect(within(mine).getByText("192.168.1.0/24: approved")).toBeTruthy();
    expect(within(mine).getByText("exit node: waiting for the server's approval")).toBeTruthy();
  });
});
