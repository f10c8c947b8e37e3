// Each test starts with a clean page and no Tauri mocks left from the one before.
import { cleanup } from "@testing-library/preact";
import { clearMocks } from "@tauri-apps/api/mocks";
import { afterEach } from "vitest";

afterEach(() => {
  cleanup();
  clearMocks();
});
