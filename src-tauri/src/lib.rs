//! The Pinhole desktop app's shell: the Tauri window, the tray and the plugins (single instance,
//! start at login, notifications, the browser, the clipboard) around the controller, which owns
//! everything that talks to pinholed. Commands only forward requests to the controller; the
//! window gets the `view` event after every change.

#[cfg(test)]
mod bindings;
pub mod controller;
mod diagnostics;
#[cfg(unix)]
mod group;
pub mod log_ring;
pub mod settings;
pub mod tray;
pub mod view;

use controller::Command;
use tauri::image::Image;
use tauri::menu::{Menu, MenuItem, PredefinedMenuItem};
use tauri::tray::{TrayIcon, TrayIconBuilder};
use tauri::{AppHandle, Emitter, Manager, WindowEvent};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_notification::NotificationExt as _;
use tauri_plugin_opener::OpenerExt as _;
use tokio::sync::{mpsc, oneshot, watch};
use view::{ActionError, Effect, View};

/// What the commands reach: the controller's inbox and its latest view.
struct Shared {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<View>,
    /// pinholed's local API (for the diagnostics bundle's own requests).
    socket: std::path::PathBuf,
}

/// Sends the controller a command carrying a reply channel and waits for the reply.
async fn ask<T>(
    shared: &Shared,
    make: impl FnOnce(oneshot::Sender<Result<T, ActionError>>) -> Command,
) -> Result<T, ActionError> {
    let (tx, rx) = oneshot::channel();
    let gone = || ActionError::new("the app's controller stopped; restart the app");
    shared.commands.send(make(tx)).await.map_err(|_| gone())?;
    rx.await.map_err(|_| gone())?
}

#[tauri::command]
fn get_view(shared: tauri::State<'_, Shared>) -> View {
    shared.view.borrow().clone()
}

#[tauri::command]
async fn retry(shared: tauri::State<'_, Shared>) -> Result<(), ActionError> {
    let _ = shared.commands.send(Command::Retry).await;
    Ok(())
}

#[tauri::command]
async fn sign_in(
    shared: tauri::State<'_, Shared>,
    server: String,
    auth_key: Option<String>,
) -> Result<(), ActionError> {
    ask(&shared, |reply| Command::SignIn {
        server,
        auth_key,
        reply,
    })
    .await
}

#[tauri::command]
async fn cancel_sign_in(shared: tauri::State<'_, Shared>) -> Result<(), ActionError> {
    let _ = shared.commands.send(Command::CancelSignIn).await;
    Ok(())
}

#[tauri::command]
async fn set_connected(shared: tauri::State<'_, Shared>, on: bool) -> Result<(), ActionError> {
    ask(&shared, |reply| Command::SetConnected { on, reply }).await
}

#[tauri::command]
async fn sign_out(shared: tauri::State<'_, Shared>) -> Result<(), ActionError> {
    ask(&shared, |reply| Command::SignOut { reply }).await
}

#[tauri::command]
async fn ping(
    shared: tauri::State<'_, Shared>,
    peer: String,
) -> Result<pinhole_proto::ipc::PingReply, ActionError> {
    ask(&shared, |reply| Command::Ping { peer, reply }).await
}

#[tauri::command]
async fn netcheck(
    shared: tauri::State<'_, Shared>,
) -> Result<pinhole_proto::ipc::NetcheckReport, ActionError> {
    ask(&shared, |reply| Command::Netcheck { reply }).await
}

#[tauri::command]
async fn set_settings(
    shared: tauri::State<'_, Shared>,
    settings: settings::Settings,
) -> Result<(), ActionError> {
    ask(&shared, |reply| Command::SetSettings { settings, reply }).await
}

/// The routes toggle, the exit-node picker, and the routes and exit node this device offers.
#[tauri::command]
async fn set_routes(
    shared: tauri::State<'_, Shared>,
    accept_routes: Option<bool>,
    exit_node: Option<String>,
    allow_lan: Option<bool>,
    advertise_routes: Option<Vec<String>>,
    advertise_exit_node: Option<bool>,
) -> Result<(), ActionError> {
    ask(&shared, |reply| Command::SetRoutes {
        accept_routes,
        exit_node,
        allow_lan,
        advertise_routes,
        advertise_exit_node,
        reply,
    })
    .await
}

#[tauri::command]
fn copy_text(app: AppHandle, text: String) -> Result<(), ActionError> {
    app.clipboard()
        .write_text(text)
        .map_err(|e| ActionError::new(format!("cannot copy: {e}")))
}

/// Writes the diagnostics bundle and returns where it went.
#[tauri::command]
async fn export_diagnostics(shared: tauri::State<'_, Shared>) -> Result<String, ActionError> {
    let view = shared.view.borrow().clone();
    diagnostics::export(&view, &shared.socket)
        .await
        .map(|p| p.display().to_string())
}

/// Shows the main window and brings it to the front.
fn show_window(app: &AppHandle) {
    if let Some(w) = app.get_webview_window("main") {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
    }
}

fn tray_image(look: tray::Look) -> Option<Image<'static>> {
    // macOS draws template images in the menu bar's own colour: the monochrome set.
    let bytes: &'static [u8] = match (cfg!(target_os = "macos"), look) {
        (false, tray::Look::Disconnected) => include_bytes!("../../icons/tray/disconnected@2x.png"),
        (false, tray::Look::Connecting) => include_bytes!("../../icons/tray/connecting@2x.png"),
        (false, tray::Look::Connected) => include_bytes!("../../icons/tray/connected@2x.png"),
        (false, tray::Look::Attention) => include_bytes!("../../icons/tray/attention@2x.png"),
        (true, tray::Look::Disconnected) => {
            include_bytes!("../../icons/tray/disconnected-mono@2x.png")
        }
        (true, tray::Look::Connecting) => include_bytes!("../../icons/tray/connecting-mono@2x.png"),
        (true, tray::Look::Connected) => include_bytes!("../../icons/tray/connected-mono@2x.png"),
        (true, tray::Look::Attention) => include_bytes!("../../icons/tray/attention-mono@2x.png"),
    };
    Image::from_bytes(bytes).ok()
}

/// The OS menu for the tray's data.
fn build_menu(app: &AppHandle, m: &tray::Menu) -> tauri::Result<Menu<tauri::Wry>> {
    let menu = Menu::new(app)?;
    for (n, item) in m.items.iter().enumerate() {
        match item {
            tray::Item::Label(text) => {
                let id = format!("label-{n}");
                menu.append(&MenuItem::with_id(app, id, text, false, None::<&str>)?)?
            }
            tray::Item::Button { id, label, enabled } => {
                menu.append(&MenuItem::with_id(app, *id, label, *enabled, None::<&str>)?)?
            }
            tray::Item::Separator => menu.append(&PredefinedMenuItem::separator(app)?)?,
        }
    }
    Ok(menu)
}

fn apply_tray(app: &AppHandle, icon: &TrayIcon, m: &tray::Menu) {
    if let Ok(menu) = build_menu(app, m) {
        let _ = icon.set_menu(Some(menu));
    }
    let _ = icon.set_icon(tray_image(m.look));
    let _ = icon.set_icon_as_template(cfg!(target_os = "macos"));
    let _ = icon.set_tooltip(Some(&m.tooltip));
}

fn on_tray_click(app: &AppHandle, id: &str) {
    let shared = app.state::<Shared>();
    let commands = shared.commands.clone();
    match id {
        tray::OPEN | tray::SIGN_IN => show_window(app),
        // The tunnel stays as pinholed has it: quitting the app is not disconnecting.
        tray::QUIT => app.exit(0),
        tray::CONNECT | tray::DISCONNECT => {
            let on = id == tray::CONNECT;
            tauri::async_runtime::spawn(async move {
                let (reply, _) = oneshot::channel();
                let _ = commands.send(Command::SetConnected { on, reply }).await;
            });
        }
        tray::COPY_ADDRESS => {
            let view = shared.view.borrow().clone();
            let addr = view
                .status
                .and_then(|s| s.self_node)
                .and_then(|me| me.addresses.into_iter().next());
            if let Some(a) = addr {
                let _ = app.clipboard().write_text(a);
            }
        }
        _ => {}
    }
}

/// Carries out what the controller asks of the desktop.
fn do_effect(app: &AppHandle, e: Effect) {
    match e {
        Effect::OpenUrl(url) => {
            if let Err(err) = app.opener().open_url(&url, None::<&str>) {
                tracing::warn!("cannot open the browser at {url}: {err}");
            }
        }
        Effect::Notify { title, body } => {
            if let Err(err) = app.notification().builder().title(title).body(body).show() {
                tracing::warn!("cannot show a notification: {err}");
            }
        }
        Effect::StartAtLogin(on) => {
            let a = app.autolaunch();
            let r = if on { a.enable() } else { a.disable() };
            if let Err(err) = r {
                tracing::warn!("cannot change start at login: {err}");
            }
        }
    }
}

/// Runs the app until it quits.
pub fn run() -> anyhow::Result<()> {
    log_ring::init();
    let minimised_arg = std::env::args().any(|a| a == "--minimised");
    let cfg = controller::Config::from_env();
    tauri::Builder::default()
        // A second launch shows this instance's window and exits.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            show_window(app)
        }))
        .plugin(tauri_plugin_opener::init())
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--minimised"]),
        ))
        .plugin(tauri_plugin_notification::init())
        .plugin(tauri_plugin_clipboard_manager::init())
        .invoke_handler(tauri::generate_handler![
            get_view,
            retry,
            sign_in,
            cancel_sign_in,
            set_connected,
            sign_out,
            ping,
            netcheck,
            set_settings,
            set_routes,
            copy_text,
            export_diagnostics
        ])
        .setup(move |app| {
            let socket = cfg.socket.clone();
            let (commands, view_rx, mut effects) = controller::spawn(cfg);
            let start_minimised = view_rx.borrow().settings.start_minimised || minimised_arg;
            app.manage(Shared {
                commands,
                view: view_rx.clone(),
                socket,
            });
            let handle = app.handle().clone();
            let first = tray::menu(&view_rx.borrow());
            let tray_icon = build_menu(&handle, &first).and_then(|menu| {
                let mut b = TrayIconBuilder::with_id("pinhole")
                    .menu(&menu)
                    .tooltip(&first.tooltip)
                    .icon_as_template(cfg!(target_os = "macos"))
                    .on_menu_event(|app, event| on_tray_click(app, event.id().as_ref()));
                if let Some(img) = tray_image(first.look) {
                    b = b.icon(img);
                }
                b.build(&handle)
            });
            let tray_icon = match tray_icon {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!("no tray icon: {e}");
                    None
                }
            };
            // Closing the window hides it to the tray, when there is one.
            if let Some(w) = app.get_webview_window("main") {
                let has_tray = tray_icon.is_some();
                let w2 = w.clone();
                w.on_window_event(move |e| {
                    if let WindowEvent::CloseRequested { api, .. } = e {
                        if has_tray {
                            api.prevent_close();
                            let _ = w2.hide();
                        }
                    }
                });
                if !(start_minimised && has_tray) {
                    let _ = w.show();
                }
            }
            // Every new view goes to the window and the tray.
            let mut rx = view_rx;
            let h = handle.clone();
            tauri::async_runtime::spawn(async move {
                loop {
                    let v = rx.borrow_and_update().clone();
                    let _ = h.emit("view", &v);
                    if let Some(t) = &tray_icon {
                        apply_tray(&h, t, &tray::menu(&v));
                    }
                    if rx.changed().await.is_err() {
                        break;
                    }
                }
            });
            let h = handle.clone();
            tauri::async_runtime::spawn(async move {
                while let Some(e) = effects.recv().await {
                    do_effect(&h, e);
                }
            });
            Ok(())
        })
        .run(tauri::generate_context!())?;
    Ok(())
}
