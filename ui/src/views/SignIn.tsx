// Signing in: the server's address (remembered), then either the browser flow (the code to
// approve, a copy button, "waiting for your browser…") or an auth key.
import { useState } from "preact/hooks";
import type { Backend } from "../backend";
import type { View } from "../bindings";
import { Alert, useAction } from "./action";
import { Copy } from "./Copy";

export function SignIn(props: { backend: Backend; view: View }) {
  const { backend, view } = props;
  const [server, setServer] = useState(view.settings.server ?? "");
  const [useKey, setUseKey] = useState(false);
  const [key, setKey] = useState("");
  const signing = useAction();
  const signingIn = view.action === "signing-in";
  const prompt = view.status?.login;
  const expired = view.status?.state === "session-expired";

  const submit = async (e: Event) => {
    e.preventDefault();
    await signing.run(() => backend.signIn(server, useKey ? key : null));
  };

  if (signingIn) {
    return (
      <main class="centre signin">
        <h1>Sign in to Pinhole</h1>
        {prompt ? (
          <>
            <p>
              Your browser opened the sign-in page of <span class="mono">{server}</span>. Enter
              this code there:
            </p>
            <p class="code-line">
              <Copy backend={backend} text={prompt.code} label="the sign-in code" class="code" />
            </p>
            <p role="status" aria-live="polite" class="waiting">
              <span class="spinner" aria-hidden="true" /> Waiting for your browser…
            </p>
            <p class="muted">
              Browser did not open? Go to <Copy backend={backend} text={prompt.url} label="the sign-in page's address" />
            </p>
          </>
        ) : (
          <p role="status" aria-live="polite" class="waiting">
            <span class="spinner" aria-hidden="true" /> {useKey ? "Signing in…" : "Asking the server for a sign-in code…"}
          </p>
        )}
        <p>
          <button type="button" onClick={() => backend.cancelSignIn()}>
            Cancel
          </button>
        </p>
      </main>
    );
  }

  const shownError = signing.error ?? view.error?.message ?? null;
  return (
    <main class="centre signin">
      <h1>Sign in to Pinhole</h1>
      {expired && (
        <p class="notice" role="status">
          Your session has expired. Sign in again to reconnect.
        </p>
      )}
      <form onSubmit={submit}>
        <label for="server">Server address</label>
        <input
          id="server"
          type="url"
          required
          placeholder="https://pinhole.example.com"
          value={server}
          onInput={(e) => setServer((e.target as HTMLInputElement).value)}
          autoComplete="url"
        />
        <fieldset>
          <legend>How to sign in</legend>
          <label class="radio">
            <input type="radio" name="method" checked={!useKey} onChange={() => setUseKey(false)} />
            In my browser
          </label>
          <label class="radio">
            <input type="radio" name="method" checked={useKey} onChange={() => setUseKey(true)} />
            With an auth key
          </label>
        </fieldset>
        {useKey && (
          <>
            <label for="authkey">Auth key</label>
            <input
              id="authkey"
              type="password"
              required
              placeholder="phk_…"
              value={key}
              onInput={(e) => setKey((e.target as HTMLInputElement).value)}
              autoComplete="off"
            />
          </>
        )}
        <Alert text={shownError} />
        <button type="submit" class="primary">
          Sign in
        </button>
      </form>
    </main>
  );
}
