// What the window shows while pinholed cannot be used: which problem it is, in plain words,
// and the command that fixes it.
import type { Backend } from "../backend";
import type { DaemonLink } from "../bindings";
import { Copy } from "./Copy";

export function DaemonProblem(props: { backend: Backend; link: DaemonLink }) {
  const { link, backend } = props;
  let title: string;
  let body: string;
  let fix: string | null = null;
  switch (link.kind) {
    case "connecting":
    case "ready":
      return (
        <main class="centre" aria-busy="true">
          <p>Looking for the Pinhole service…</p>
        </main>
      );
    case "not-running":
      title = "The Pinhole service is not running";
      body = `Pinhole needs its helper service (pinholed) to manage the tunnel, and nothing answers at ${link.socket}. Start it with:`;
      fix = link.fix;
      break;
    case "not-allowed":
      if (link.joined_since_login) {
        title = "Pinhole can be used after your next login";
        body = "You were added to the group pinhole, whose members may use Pinhole; that takes effect when you next log in.";
      } else {
        title = "You are not allowed to use Pinhole on this computer";
        body = `${link.detail}. Add yourself to the group pinhole:`;
      }
      fix = link.fix;
      break;
    case "wrong-version":
      title = "The app and the Pinhole service do not match";
      body = `${link.message}.`;
      fix = link.fix;
      break;
    case "unreachable":
      title = "The Pinhole service cannot be reached";
      body = link.message;
      break;
  }
  return (
    <main class="centre problem">
      <h1>{title}</h1>
      <p>{body}</p>
      {fix && (
        <p>
          <Copy backend={backend} text={fix} label="the command" class="command" />
        </p>
      )}
      <p>
        <button type="button" class="primary" onClick={() => backend.retry()}>
          Try again
        </button>
      </p>
      <p class="muted">The app checks again every few seconds.</p>
    </main>
  );
}
