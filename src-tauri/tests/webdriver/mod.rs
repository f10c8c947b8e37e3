//! A small W3C WebDriver client for the end-to-end test. The drivers (tauri-driver for the app,
//! WebKitWebDriver with MiniBrowser for the server's sign-in page) run inside a lab namespace,
//! so every call goes through `curl` run in that namespace; request bodies go through a file
//! (axe-core alone is larger than one command-line argument may be).

use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Driver {
    /// The network namespace the driver listens in.
    ns: String,
    base: String,
    session: String,
    scratch: PathBuf,
    pub name: String,
}

fn call(
    ns: &str,
    scratch: &Path,
    method: &str,
    url: &str,
    body: Option<&Value>,
) -> Result<Value, String> {
    let mut argv = vec![
        "netns",
        "exec",
        ns,
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-X",
        method,
        "-H",
        "Content-Type: application/json",
    ];
    let file;
    let data;
    if let Some(b) = body {
        file = scratch.join(format!("body-{}.json", std::process::id()));
        std::fs::write(&file, b.to_string()).map_err(|e| e.to_string())?;
        data = format!("@{}", file.display());
        argv.extend(["--data-binary", data.as_str()]);
    }
    argv.push(url);
    // curl gives up after 60 s, so this always ends.
    let out = std::process::Command::new("ip")
        .args(&argv)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("{method} {url}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{method} {url}: curl failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{method} {url}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })?;
    if let Some(err) = v["value"]["error"].as_str() {
        return Err(format!("{method} {url}: {err}: {}", v["value"]["message"]));
    }
    Ok(v["value"].clone())
}

impl Driver {
    /// Opens a session at the driver listening on `port` in the namespace `ns`; request bodies
    /// go through files in a directory below `scratch`.
    pub fn start(
        ns: &str,
        scratch: &Path,
        port: u16,
        capabilities: Value,
        name: &str,
    ) -> Result<Driver, String> {
        let base = format!("http://127.0.0.1:{port}");
        let scratch = scratch.join(format!("webdriver-{name}"));
        std::fs::create_dir_all(&scratch).map_err(|e| e.to_string())?;
        let v = call(
            ns,
            &scratch,
            "POST",
            &format!("{base}/session"),
            Some(&json!({ "capabilities": { "alwaysMatch": capabilities } })),
        )?;
        let session = v["sessionId"]
            .as_str()
            .ok_or(format!("no session id in {v}"))?
            .to_string();
        Ok(Driver {
            ns: ns.to_string(),
            base,
            session,
            scratch,
            name: name.to_string(),
        })
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        call(&self.ns, &self.scratch, method, &url, body.as_ref())
    }

    pub fn navigate(&self, url: &str) -> Result<(), String> {
        self.call("POST", "/url", Some(json!({ "url": url })))
            .map(|_| ())
    }

    /// The first element matching the XPath expression.
    pub fn find(&self, xpath: &str) -> Result<String, String> {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({ "using": "xpath", "value": xpath })),
        )?;
        v[ELEMENT]
            .as_str()
            .map(str::to_string)
            .ok_or(format!("no element id in {v}"))
    }

    /// Waits up to `timeout` for an element to match.
    pub fn wait_for(&self, xpath: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.find(xpath) {
                Ok(e) => return Ok(e),
                Err(e) if Instant::now() >= deadline => {
                    return Err(format!(
                        "{}: nothing matches {xpath} after {timeout:?} ({e}); the page says:\n{}",
                        self.name,
                        self.text()
                    ))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(150)),
            }
        }
    }

    pub fn click(&self, xpath: &str) -> Result<(), String> {
        let e = self.wait_for(xpath, Duration::from_secs(10))?;
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})))
            .map(|_| ())
    }

    /// Replaces the text of the input matching `xpath`.
    pub fn type_into(&self, xpath: &str, text: &str) -> Result<(), String> {
        let e = self.wait_for(xpath, Duration::from_secs(10))?;
        self.call("POST", &format!("/element/{e}/clear"), Some(json!({})))?;
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .map(|_| ())
    }

    pub fn element_text(&self, xpath: &str) -> Result<String, String> {
        let e = self.wait_for(xpath, Duration::from_secs(10))?;
        let v = self.call("GET", &format!("/element/{e}/text"), None)?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub fn exec(&self, script: &str, args: Value) -> Result<Value, String> {
        self.call(
            "POST",
            "/execute/sync",
            Some(json!({ "script": script, "args": args })),
        )
    }

    /// The whole page's visible text (empty if it cannot be read).
    pub fn text(&self) -> String {
        self.exec(
            "return document.body ? document.body.innerText : ''",
            json!([]),
        )
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
    }

    /// Waits up to `timeout` for the page's text to contain `needle`.
    pub fn wait_text(&self, needle: &str, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            let t = self.text();
            if t.contains(needle) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{}: no \"{needle}\" after {timeout:?}; the page says:\n{t}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(150));
        }
    }

    /// Resizes the window.
    pub fn set_window_size(&self, width: u32, height: u32) -> Result<(), String> {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({ "width": width, "height": height })),
        )
        .map(|_| ())
    }

    /// Saves a PNG of the window.
    pub fn screenshot(&self, path: &Path) -> Result<(), String> {
        let v = self.call("GET", "/screenshot", None)?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or_default())
            .map_err(|e| e.to_string())?;
        std::fs::write(path, png).map_err(|e| e.to_string())
    }

    /// Runs axe-core on the page; the serious and critical findings, one line each.
    pub fn accessibility(&self, axe_source: &str) -> Result<Vec<String>, String> {
        self.exec(axe_source, json!([]))?;
        let script = "const done = arguments[arguments.length - 1];\
            axe.run(document, { resultTypes: ['violations'] }).then(r => done(r.violations\
              .filter(v => v.impact === 'serious' || v.impact === 'critical')\
              .map(v => v.impact + ' ' + v.id + ': ' + v.help + ' (' + v.nodes.map(n => n.target.join(' ')).join(', ') + ')')))\
              .catch(e => done(['axe failed: ' + e]));";
        let v = self.call(
            "POST",
            "/execute/async",
            Some(json!({ "script": script, "args": [] })),
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Ends the session (the driver closes the app or browser).
    pub fn quit(&self) {
        let _ = call(
            &self.ns,
            &self.scratch,
            "DELETE",
            &format!("{}/session/{}", self.base, self.session),
            None,
        );
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        self.quit();
    }
}
