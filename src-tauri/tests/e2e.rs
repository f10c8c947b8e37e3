//! The app end to end: the real pinhole-app under Xvfb, driven through WebDriver (tauri-driver
//! with WebKitWebDriver), against a real pinholed and pinhole-control in a namespace lab. It
//! signs in through the browser flow (the code entered on the server's sign-in page, then the
//! organisation's identity provider — oidc-provider, started in the lab — in MiniBrowser,
//! driven the same way), sees one peer direct and one relayed (behind a firewall that
//! drops UDP), opens each and pings it, checks the network, exports diagnostics, switches off
//! and on, and signs out. axe-core runs on every screen (no serious or critical findings), and
//! every screen is saved as a PNG in target/app-e2e/.

mod webdriver;

use pinhole_netlab::mesh::{self, Control, PUBLIC};
use pinhole_netlab::{skip_without_root, Lab};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use webdriver::Driver;

const APP_DRIVER_PORT: u16 = 4444;
const BROWSER_DRIVER_PORT: u16 = 4446;
const MINIBROWSER: &str = "/usr/lib/x86_64-linux-gnu/webkit2gtk-4.1/MiniBrowser";

/// The test OpenID provider: where it listens in the public namespace, and its client secret.
const IDP_PORT: u16 = 9555;
const IDP_SECRET: &str = "an e2e-only client secret";

fn idp_issuer() -> String {
    format!("http://198.18.1.1:{IDP_PORT}")
}

/// Starts oidc-provider (crates/control/tests/oidc-provider) in the public namespace with
/// pinhole-control's callback registered; waits until it listens.
fn start_idp(lab: &mut Lab) -> pinhole_netlab::Proc {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../crates/control/tests/oidc-provider/provider.mjs");
    assert!(
        script.with_file_name("node_modules").is_dir(),
        "the test OpenID provider's packages: run npm ci in {} (cargo xtask test does)",
        script
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let port = IDP_PORT.to_string();
    let redirect = format!("{}/oidc/callback", mesh::control_url());
    let p = lab
        .spawn_env(
            PUBLIC,
            &["node", script.to_str().expect("a UTF-8 path")],
            &[
                ("OIDC_HOST", "198.18.1.1"),
                ("OIDC_PORT", &port),
                ("OIDC_CLIENT_SECRET", IDP_SECRET),
                ("OIDC_REDIRECT_URIS", &redirect),
            ],
        )
        .expect("starting the OpenID provider");
    let up = Lab::wait_for(Duration::from_secs(15), || {
        p.log_text().contains(&idp_issuer())
    });
    assert!(up, "the OpenID provider did not start:\n{}", p.log_text());
    p
}

fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn artifacts() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/app-e2e");
    let _ = std::fs::create_dir_all(&dir);
    dir
}

/// A free X display number (its socket file does not exist).
fn free_display() -> u32 {
    let start = 100 + std::process::id() % 400;
    (start..start + 100)
        .find(|n| !Path::new(&format!("/tmp/.X11-unix/X{n}")).exists())
        .unwrap_or(start)
}

/// Removes the test's credential store entry, also when the test fails.
struct ForgetEntry(String);

impl Drop for ForgetEntry {
    fn drop(&mut self) {
        let _ = pinhole_client::credentials::forget_named(&self.0);
    }
}

/// Copies the lab's process logs to target/app-e2e/ when the test fails (the lab's directory
/// goes with the lab): what pinholed and control said is what explains a failure.
struct KeepLogs(Vec<(&'static str, PathBuf)>);

impl Drop for KeepLogs {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for (name, log) in &self.0 {
            let to = artifacts().join(format!("{name}.log"));
            if std::fs::copy(log, &to).is_ok() {
                eprintln!("{name}'s log: {}", to.display());
            }
        }
    }
}

/// Memory (proportional set size, KiB: shared pages split between their users) of `pid` and
/// of every process below it (the app's WebKit processes), by program name.
fn tree_pss_kib(pid: u32) -> Vec<(String, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")) {
            let pss = s
                .lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let name = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
            found.push((name.trim().to_string(), pss));
        }
        // Children of every thread (GLib spawns the web process from a worker thread).
        if let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) {
            for t in tasks.filter_map(Result::ok) {
                let children = t.path().join("children");
                if let Ok(c) = std::fs::read_to_string(children) {
                    stack.extend(c.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
                }
            }
        }
    }
    found
}

fn app_pid(app: &Path) -> Option<u32> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", "-n", &app.display().to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Screenshot and accessibility check of the screen shown now.
struct Screens {
    dir: PathBuf,
    axe: String,
    findings: Vec<String>,
}

impl Screens {
    fn check(&mut self, d: &Driver, name: &str) {
        d.screenshot(&self.dir.join(format!("{name}.png")))
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        let found = d
            .accessibility(&self.axe)
            .unwrap_or_else(|e| panic!("axe on {name}: {e}"));
        for f in found {
            self.findings.push(format!("{name}: {f}"));
        }
    }
}

/// The XPath of a peer row's button.
fn row(name: &str) -> String {
    format!("//button[@data-peer='{name}']")
}

/// The path badge of a peer's row (Direct, Relayed, …).
fn path_of(d: &Driver, name: &str) -> String {
    d.exec(
        "const b = document.querySelector(`button[data-peer='${arguments[0]}'] .badge`);\
         return b ? b.textContent : '';",
        json!([name]),
    )
    .ok()
    .and_then(|v| v.as_str().map(str::to_string))
    .unwrap_or_default()
}

/// Waits until the row of `name` shows `path`.
fn wait_path(d: &Driver, name: &str, path: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let shown = path_of(d, name);
        if shown == path {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} is not {path} after {timeout:?}: {shown}\n{}",
            d.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn the_app_signs_in_shows_direct_and_relayed_peers_pings_and_signs_out() {
    let test = "the_app_signs_in_shows_direct_and_relayed_peers_pings_and_signs_out";
    if skip_without_root(test) {
        return;
    }
    for (cmd, pkg) in [
        ("Xvfb", "xvfb"),
        ("dbus-daemon", "dbus-daemon"),
        ("tauri-driver", "cargo install tauri-driver"),
        ("WebKitWebDriver", "webkit2gtk-driver"),
        ("curl", "curl"),
    ] {
        if !have(cmd) && pinhole_testkit::skip(test, &format!("{cmd} is missing ({pkg})")) {
            return;
        }
    }
    let app = PathBuf::from(env!("CARGO_BIN_EXE_pinhole-app"));
    let axe_path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/node_modules/axe-core/axe.min.js");
    let axe = std::fs::read_to_string(&axe_path)
        .unwrap_or_else(|e| panic!("axe-core ({}): run npm ci in ui/: {e}", axe_path.display()));

    // The network: n1 runs the app; n2 is reachable directly; n3 drops all UDP (relayed only).
    let mut lab = mesh::star(&["n1", "n2", "n3"]);
    // People sign in through the organisation's identity provider: oidc-provider (certified) in
    // the public namespace beside pinhole-control; alice@example.com lands in account example.com.
    let idp = start_idp(&mut lab);
    let secret_file = lab.dir().join("oidc-client-secret");
    std::fs::write(&secret_file, IDP_SECRET).expect("writing the client secret");
    let control = Control::new(&lab);
    let server = control.start_with(
        &mut lab,
        &[
            "--oidc-issuer",
            &idp_issuer(),
            "--oidc-client-id",
            "pinhole",
            "--oidc-client-secret-file",
            secret_file.to_str().expect("a UTF-8 path"),
            "--oidc-scope",
            "groups",
        ],
    );
    let key = control.authkey_file_in(&lab, "example.com");
    mesh::block_udp(&lab, "n3");
    let n2 = mesh::start_node(&mut lab, "n2", &key);
    let n3 = mesh::start_node(&mut lab, "n3", &key);
    let mut logs = KeepLogs(vec![
        ("control", server.log().to_path_buf()),
        ("n2", n2.log().to_path_buf()),
        ("n3", n3.log().to_path_buf()),
    ]);
    let socket = lab.dir().join("n1.sock");

    // The desktop: Xvfb, and the drivers, in n1's namespace (the browser must reach control).
    let display = format!(":{}", free_display());
    let _x = lab
        .spawn(
            "n1",
            &[
                "Xvfb",
                &display,
                "-screen",
                "0",
                "1280x800x24",
                "-nolisten",
                "tcp",
            ],
        )
        .expect("starting Xvfb");
    let xsock = format!("/tmp/.X11-unix/X{}", &display[1..]);
    assert!(
        Lab::wait_for(Duration::from_secs(10), || Path::new(&xsock).exists()),
        "Xvfb did not start"
    );
    let home = lab.dir().join("home");
    let exports = lab.dir().join("exports");
    for d in [&home, &exports] {
        std::fs::create_dir_all(d).expect("creating the app's directories");
    }
    // A session bus, as a desktop has (single instance and the tray use it).
    let bus = home.join("bus");
    let bus_address = format!("unix:path={}", bus.display());
    let _dbus = lab
        .spawn(
            "n1",
            &[
                "dbus-daemon",
                "--session",
                "--nofork",
                "--nopidfile",
                &format!("--address={bus_address}"),
            ],
        )
        .expect("starting dbus-daemon");
    assert!(
        Lab::wait_for(Duration::from_secs(10), || bus.exists()),
        "dbus-daemon did not start"
    );
    let entry = format!("app-e2e-{}", std::process::id());
    let _forget = ForgetEntry(entry.clone());
    let s = |p: &Path| p.display().to_string();
    let env: Vec<(String, String)> = vec![
        ("DISPLAY".into(), display.clone()),
        ("DBUS_SESSION_BUS_ADDRESS".into(), bus_address.clone()),
        ("HOME".into(), s(&home)),
        ("XDG_CONFIG_HOME".into(), s(&home.join("config"))),
        ("XDG_DATA_HOME".into(), s(&home.join("data"))),
        ("XDG_CACHE_HOME".into(), s(&home.join("cache"))),
        ("XDG_RUNTIME_DIR".into(), s(&home)),
        ("PINHOLE_SOCKET".into(), s(&socket)),
        ("PINHOLE_APP_CONFIG_DIR".into(), s(&home.join("pinhole"))),
        ("PINHOLE_APP_EXPORT_DIR".into(), s(&exports)),
        ("PINHOLE_CREDENTIAL_NAME".into(), entry.clone()),
        ("PINHOLE_KEYRING".into(), "kernel".into()),
        ("NO_AT_BRIDGE".into(), "1".into()),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app_port = APP_DRIVER_PORT.to_string();
    let native_port = (APP_DRIVER_PORT + 1).to_string();
    let tauri_driver = lab
        .spawn_env(
            "n1",
            &[
                "tauri-driver",
                "--port",
                &app_port,
                "--native-port",
                &native_port,
            ],
            &env_refs,
        )
        .expect("starting tauri-driver");
    let browser_port = format!("--port={BROWSER_DRIVER_PORT}");
    let browser_driver = lab
        .spawn_env("n1", &["WebKitWebDriver", &browser_port], &env_refs)
        .expect("starting WebKitWebDriver");
    std::thread::sleep(Duration::from_millis(500));
    let dir = artifacts();
    let mut screens = Screens {
        dir: dir.clone(),
        axe,
        findings: vec![],
    };

    // Start: the sign-in screen.
    let started = Instant::now();
    let ns = lab.ns("n1").expect("n1's namespace").to_string();
    let d = Driver::start(
        &ns,
        lab.dir(),
        APP_DRIVER_PORT,
        json!({ "tauri:options": { "application": app.display().to_string() } }),
        "app",
    )
    .unwrap_or_else(|e| {
        panic!(
            "no app session: {e}\ntauri-driver:\n{}\nWebKitWebDriver:\n{}",
            tauri_driver.log_text(),
            browser_driver.log_text()
        )
    });
    // pinholed is not started yet: the app says so, and what starts it.
    d.wait_text(
        "The Pinhole service is not running",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", tauri_driver.log_text()));
    let start_ms = started.elapsed().as_millis();
    // Memory with the first screen shown, before axe-core is injected into the page.
    std::thread::sleep(Duration::from_secs(1));
    let first = app_pid(&app).map(tree_pss_kib).unwrap_or_default();
    assert!(first.len() >= 2, "the app and its web process: {first:?}");
    screens.check(&d, "0-service-missing");
    // Once it runs, the app finds it by itself.
    let daemon = mesh::start_signed_out(&mut lab, "n1");
    logs.0.push(("n1", daemon.log().to_path_buf()));
    d.wait_text("Sign in to Pinhole", Duration::from_secs(10))
        .unwrap();
    screens.check(&d, "1-sign-in");

    // Launching the app again shows this one's window and leaves at once (single instance).
    let mut argv: Vec<String> = vec!["env".into()];
    argv.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
    argv.push(app.display().to_string());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let second = lab.run("n1", &argv, Duration::from_secs(15));
    assert!(
        second.as_ref().is_ok_and(|o| o.status.success()),
        "a second launch did not hand over to the running app: {second:?}"
    );
    d.wait_text("Sign in to Pinhole", Duration::from_secs(5))
        .unwrap();

    // Sign in through the browser.
    let url = mesh::control_url();
    d.type_into("//input[@id='server']", &url).unwrap();
    d.click("//button[@type='submit']").unwrap();
    d.wait_text("Waiting for your browser", Duration::from_secs(15))
        .unwrap();
    let code = d
        .element_text("//button[contains(@class,'code')]/span[contains(@class,'mono')]")
        .unwrap();
    let page = d
        .element_text("//button[starts-with(@aria-label,\"Copy the sign-in page's address\")]/span[contains(@class,'mono')]")
        .unwrap();
    assert!(code.len() >= 8, "a sign-in code: {code:?}");
    assert_eq!(page, format!("{url}/device"));
    screens.check(&d, "2-waiting-for-browser");
    {
        let b = Driver::start(
            &ns,
            lab.dir(),
            BROWSER_DRIVER_PORT,
            json!({ "webkitgtk:browserOptions": { "binary": MINIBROWSER, "args": ["--automation"] } }),
            "browser",
        )
        .unwrap_or_else(|e| panic!("no browser session: {e}\n{}", browser_driver.log_text()));
        b.navigate(&page).unwrap();
        b.type_into("//input[@id='user_code']", &code).unwrap();
        b.click("//button[@id='oidc']").unwrap();
        b.wait_text("Example IdP", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}\nidp:\n{}", idp.log_text()));
        b.type_into("//input[@id='login']", "alice@example.com")
            .unwrap();
        b.type_into("//input[@id='password']", "any password")
            .unwrap();
        b.screenshot(&dir.join("2b-identity-provider.png")).unwrap();
        b.click("//button[@id='idp-submit']").unwrap();
        b.wait_text("Device approved", Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}\ncontrol:\n{}", server.log_text()));
        assert!(b.text().contains("alice@example.com"), "{}", b.text());
        b.screenshot(&dir.join("2c-server-approval.png")).unwrap();
        b.quit();
    }

    // Signed in and connected: this device, and both peers in the list.
    d.wait_text("Connected", Duration::from_secs(20)).unwrap();
    d.wait_for(&row("n2"), Duration::from_secs(15)).unwrap();
    d.wait_for(&row("n3"), Duration::from_secs(15)).unwrap();
    let text = d.text();
    assert!(text.contains("n1") && text.contains("100.64."), "{text}");

    // Open n2 and ping it: the reply, and the path it came over.
    d.click(&row("n2")).unwrap();
    d.wait_text("Candidate endpoints", Duration::from_secs(5))
        .unwrap();
    d.click("//button[normalize-space()='Ping']").unwrap();
    d.wait_text("Reply in", Duration::from_secs(10)).unwrap();
    d.click("//button[contains(.,'All peers')]").unwrap();
    wait_path(&d, "n2", "Direct", Duration::from_secs(15));
    // n3 drops UDP: relayed, and the detail says why.
    d.click(&row("n3")).unwrap();
    d.click("//button[normalize-space()='Ping']").unwrap();
    d.wait_text("Reply in", Duration::from_secs(10)).unwrap();
    d.wait_text("over the relay", Duration::from_secs(1))
        .unwrap();
    // Why, once discovery has given up on the direct path: n3 published no STUN endpoint and
    // none of its pings arrive.
    d.wait_text("Why not direct", Duration::from_secs(15))
        .unwrap();
    d.wait_text("the peer's network blocks UDP", Duration::from_secs(20))
        .unwrap();
    screens.check(&d, "4-peer-relayed");
    d.click("//button[contains(.,'All peers')]").unwrap();
    wait_path(&d, "n3", "Relayed", Duration::from_secs(5));
    wait_path(&d, "n2", "Direct", Duration::from_secs(5));
    screens.check(&d, "3-peers");
    // At 200% zoom the window is half as wide in CSS pixels: the layout reflows, nothing is
    // cut off sideways.
    d.set_window_size(480, 680).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let overflow = d
        .exec(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth",
            json!([]),
        )
        .unwrap();
    assert!(
        overflow.as_i64().is_some_and(|o| o <= 0),
        "the page scrolls sideways at 480 px: {overflow}"
    );
    screens.check(&d, "3b-peers-narrow");
    d.set_window_size(960, 680).unwrap();
    d.click(&row("n2")).unwrap();
    d.wait_text("(in use)", Duration::from_secs(10)).unwrap();
    // The peer's DNS name, with its copy button.
    d.find("//button[starts-with(@aria-label,'Copy name n2.pinhole.internal')]")
        .unwrap();
    screens.check(&d, "5-peer-direct");

    // The network view.
    d.click("//nav//button[normalize-space()='Network']")
        .unwrap();
    d.click("//button[normalize-space()='Check the network']")
        .unwrap();
    d.wait_text("Relay regions", Duration::from_secs(15))
        .unwrap();
    // Names: the suffix peers answer under, and where pinholed answers.
    d.wait_text("NAME.pinhole.internal", Duration::from_secs(5))
        .unwrap();
    d.wait_text("100.100.100.100", Duration::from_secs(1))
        .unwrap();
    screens.check(&d, "6-network");

    // Settings: the diagnostics bundle.
    d.click("//nav//button[normalize-space()='Settings']")
        .unwrap();
    d.click("//button[normalize-space()='Export diagnostics']")
        .unwrap();
    d.wait_text("Saved to", Duration::from_secs(20)).unwrap();
    screens.check(&d, "7-settings");

    // Routes: n2 offers to be an exit node and the server approves it; the picker lists it,
    // choosing it sends all of n1's traffic through n2, "None" takes it back.
    let (ok, out, err) = mesh::pinhole(&lab, "n2", &["up", "--advertise-exit-node"]);
    assert!(ok, "{out}{err}");
    control.cli(&lab, &["route", "approve", "n2", "exit"]);
    let n2_option = "//select[@aria-label='Exit node']/option[normalize-space()='n2']";
    d.wait_for(n2_option, Duration::from_secs(10)).unwrap();
    d.click(n2_option).unwrap();
    d.wait_text(
        "All internet traffic goes through n2.",
        Duration::from_secs(10),
    )
    .unwrap();
    let rules = lab
        .run_ok("n1", &["ip", "rule"], Duration::from_secs(5))
        .unwrap_or_default();
    assert!(rules.contains("lookup 5068"), "{rules}");
    screens.check(&d, "7b-exit-node");
    d.click("//select[@aria-label='Exit node']/option[normalize-space()='None']")
        .unwrap();
    let off = Lab::wait_for(Duration::from_secs(10), || {
        mesh::status_json(&lab, "n1")["self"]["exit_node"].is_null()
    });
    assert!(off, "the exit node is still chosen");
    let bundle = std::fs::read_dir(&exports)
        .expect("the export directory")
        .filter_map(Result::ok)
        .find(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pinhole-diagnostics-")
        })
        .expect("a diagnostics file");
    let bundle: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.path()).unwrap()).expect("JSON");
    assert_eq!(bundle["status"]["state"], "connected", "{bundle:#}");
    assert!(bundle["netcheck"]["regions"].is_array(), "{bundle:#}");
    assert!(bundle["app_log"].is_array());
    let daemon_log = bundle["daemon_log"]
        .as_array()
        .expect("pinholed's log lines");
    assert!(
        daemon_log
            .iter()
            .any(|l| l.as_str().is_some_and(|l| l.contains("local API"))),
        "{daemon_log:?}"
    );

    // Memory while connected with its peers shown.
    let session = app_pid(&app).map(tree_pss_kib).unwrap_or_default();

    // Switch off, then on again.
    d.click("//nav//button[normalize-space()='Peers']").unwrap();
    d.click("//button[@role='switch']").unwrap();
    d.wait_text("Disconnected", Duration::from_secs(15))
        .unwrap();
    screens.check(&d, "8-disconnected");
    d.click("//button[@role='switch']").unwrap();
    d.wait_text("Connected", Duration::from_secs(20)).unwrap();

    // Sign out: back to the sign-in screen, the server remembered, the session gone. The
    // session is read from the store the app was told to use (PINHOLE_KEYRING above), whatever
    // this process's environment says, and it must be there first.
    let stored = |what: &str| {
        pinhole_client::credentials::load_named_in("kernel", &entry)
            .unwrap_or_else(|e| panic!("reading the app's credential entry {what}: {e}"))
    };
    assert!(
        stored("while signed in").is_some(),
        "the signed-in app keeps its session in the kernel keyring entry {entry}"
    );
    d.click("//nav//button[normalize-space()='Settings']")
        .unwrap();
    d.click("//button[normalize-space()='Sign out']").unwrap();
    d.wait_text("Sign in to Pinhole", Duration::from_secs(15))
        .unwrap();
    let server = d
        .exec("return document.getElementById('server').value", json!([]))
        .unwrap();
    assert_eq!(server, json!(url), "the server is remembered");
    assert_eq!(
        stored("after signing out"),
        None,
        "the session is gone from the credential store"
    );
    d.quit();

    let metrics = json!({
        "start_to_first_screen_ms": start_ms,
        "first_screen_pss_kib": first.iter().map(|(_, k)| k).sum::<u64>(),
        "first_screen_pss_kib_by_process": first,
        "connected_after_axe_pss_kib": session.iter().map(|(_, k)| k).sum::<u64>(),
    });
    std::fs::write(dir.join("metrics.json"), metrics.to_string()).unwrap();
    eprintln!("app e2e: {metrics}; screenshots in {}", dir.display());
    assert!(
        screens.findings.is_empty(),
        "accessibility (axe-core) found serious or critical problems:\n{}",
        screens.findings.join("\n")
    );
    assert!(
        daemon.log_text().contains("local API"),
        "{}",
        daemon.log_text()
    );
}
