// Entry point: the app with the Tauri backend.
import { render } from "preact";
import { App } from "./App";
import { tauriBackend } from "./backend";
import "./style.css";

const root = document.getElementById("app");
if (root) render(<App backend={tauriBackend} />, root);
