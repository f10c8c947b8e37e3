//! `pinhole-app`: the desktop app. Everything is in the library (`pinhole_app::run`).
// No console window next to the app on Windows.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    if let Err(e) = pinhole_app::run() {
        eprintln!("pinhole-app: {e:#}");
        std::process::exit(1);
    }
}
