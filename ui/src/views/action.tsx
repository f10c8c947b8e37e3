// What every button that asks the app for something shares: whether it is under way, and why
// it failed, shown as an alert.
import { useState } from "preact/hooks";
import { errorText } from "../backend";

/** `run(f)` marks the action busy, clears the last error, and keeps the new one if `f` fails. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const run = async <T,>(f: () => Promise<T>): Promise<T | undefined> => {
    setBusy(true);
    setError(null);
    try {
      return await f();
    } catch (e) {
      setError(errorText(e));
      return undefined;
    } finally {
      setBusy(false);
    }
  };
  return { busy, error, run };
}

/** A failure in words, announced to screen readers; nothing without one. */
export function Alert(props: { text: string | null | undefined }) {
  return props.text ? (
    <p class="error" role="alert">
      {props.text}
    </p>
  ) : null;
}
