//! Tauri's build step (the app's config, capabilities and icons), after checking that the web
//! UI it embeds has been built.

fn main() {
    let dist = std::path::Path::new("../ui/dist/index.html");
    println!("cargo:rerun-if-changed=../ui/dist");
    if !dist.exists() {
        // Tauri embeds ui/dist at compile time; without it the build fails with a less helpful
        // message.
        panic!(
            "the web UI is not built: run `npm ci && npm run build` in ui/ (cargo xtask test does)"
        );
    }
    tauri_build::build()
}
