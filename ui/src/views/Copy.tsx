// A value that copies itself when clicked, and says so to screen readers.
import { useState } from "preact/hooks";
import type { Backend } from "../backend";

export function Copy(props: { backend: Backend; text: string; label?: string; class?: string }) {
  const [copied, setCopied] = useState(false);
  const click = async () => {
    try {
      await props.backend.copy(props.text);
      setCopied(true);
      setTimeout(() => setCopied(false), 1500);
    } catch {
      setCopied(false);
    }
  };
  return (
    <button
      type="button"
      class={`copy ${props.class ?? ""}`}
      onClick={click}
      aria-label={props.label ? `Copy ${props.label}: ${props.text}` : `Copy ${props.text}`}
      title="Click to copy"
    >
      <span class="mono">{props.text}</span>
      <span class="copy-note" aria-live="polite">
        {copied ? "Copied" : ""}
      </span>
    </button>
  );
}
