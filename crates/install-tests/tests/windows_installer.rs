//! The Windows installer (NSIS) as a user runs it, under Wine in a Wine prefix of the test's
//! own: its contents listed; a silent install puts the files in Program Files, registers
//! pinholed as an automatic service and starts it (the CLI gets an answer through the named
//! pipe), adds the Start menu entry and the Add/Remove Programs entry; the silent uninstall
//! leaves nothing behind — files, service, entries, state.

use pinhole_install_tests::{package, run_env, run_ok, text};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SERVICE_KEY: &str = r"HKLM\System\CurrentControlSet\Services\pinholed";
const UNINSTALL_KEY: &str = r"HKLM\Software\Microsoft\Windows\CurrentVersion\Uninstall\Pinhole";
const INSTALLED: &[&str] = &[
    "pinholed.exe",
    "pinhole.exe",
    "pinhole-app.exe",
    "WebView2Loader.dll",
    "pinhole.ico",
    "uninstall.exe",
];

/// A Wine prefix made for the test, its processes ended and its files removed on drop.
struct Prefix {
    dir: PathBuf,
    wine: String,
}

impl Prefix {
    fn env(&self) -> Vec<(&str, String)> {
        vec![
            ("WINEPREFIX", self.dir.to_string_lossy().into_owned()),
            ("WINEDEBUG", "-all".into()),
            ("WINEDLLOVERRIDES", "bcryptprimitives=n,b".into()),
        ]
    }

    fn wine(&self, args: &[&str]) -> std::process::Output {
        let env = self.env();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        run_env(&self.wine, args, &env)
    }

    fn drive_c(&self, path: &str) -> PathBuf {
        self.dir.join("drive_c").join(path)
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        // The prefix's wineserver (beside the wine loader) ends every process in it: services,
        // pinholed, the installer's leftovers.
        let server = Path::new(&self.wine).with_file_name("wineserver");
        let _ = std::process::Command::new(server)
            .arg("-k")
            .envs(self.env())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    done()
}

#[test]
fn the_installer_sets_up_the_service_and_its_uninstaller_leaves_nothing_behind() {
    let test = "the_installer_sets_up_the_service_and_its_uninstaller_leaves_nothing_behind";
    let setup = match package("pinhole-", ".exe") {
        Ok(p) => p,
        Err(why) => {
            assert!(pinhole_testkit::skip(test, &why));
            return;
        }
    };
    let (Some(wine), Some(stub)) = (
        std::env::var_os("CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER"),
        std::env::var_os("PINHOLE_WINE_STUB"),
    ) else {
        assert!(pinhole_testkit::skip(
            test,
            "no Wine set up (cargo xtask test sets it up)"
        ));
        return;
    };
    let name = setup.file_name().unwrap().to_string_lossy().into_owned();

    // What is inside: the three programs and the app's WebView2 loader; wintun.dll exactly
    // when the name does not say the installer is a test build without it.
    let listing = run_ok("7z", &["l", &setup.to_string_lossy()]);
    for file in [
        "pinholed.exe",
        "pinhole.exe",
        "pinhole-app.exe",
        "WebView2Loader.dll",
    ] {
        assert!(listing.contains(file), "{name} lacks {file}:\n{listing}");
    }
    assert_eq!(
        listing.contains("wintun.dll"),
        !name.contains("without-wintun"),
        "{name}: wintun.dll inside must match the name:\n{listing}"
    );

    let prefix = Prefix {
        dir: std::env::temp_dir().join(format!("pinhole-wine-{}", std::process::id())),
        wine: wine.to_string_lossy().into_owned(),
    };
    let _ = std::fs::remove_dir_all(&prefix.dir);
    let out = prefix.wine(&["cmd", "/c", "echo", "ready"]);
    assert!(out.status.success(), "a Wine prefix: {}", text(&out));
    // Rust's std needs ProcessPrng, which Wine 8 lacks: the stand-in, for this prefix only.
    std::fs::copy(
        &stub,
        prefix.drive_c("windows/system32/bcryptprimitives.dll"),
    )
    .unwrap();

    let out = prefix.wine(&[&setup.to_string_lossy(), "/S"]);
    assert!(
        out.status.success(),
        "the silent install failed: {}",
        text(&out)
    );
    let dir = prefix.drive_c("Program Files/Pinhole");
    for file in INSTALLED {
        assert!(dir.join(file).is_file(), "{file} is not installed");
    }
    let shortcut = prefix.drive_c("ProgramData/Microsoft/Windows/Start Menu/Programs/Pinhole.lnk");
    assert!(shortcut.is_file(), "no Start menu entry");

    // The service: registered to start with Windows, running, answering the CLI.
    let service = text(&prefix.wine(&["reg", "query", SERVICE_KEY]));
    assert!(service.contains("service run"), "{service}");
    // `Start    REG_DWORD    0x2`: SERVICE_AUTO_START.
    let start = service
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"Start"));
    assert_eq!(
        start.as_deref(),
        Some(&["Start", "REG_DWORD", "0x2"][..]),
        "automatic start:\n{service}"
    );
    let status = prefix.wine(&[r"C:\Program Files\Pinhole\pinhole.exe", "status"]);
    assert!(
        status.status.success() && text(&status).contains("not signed in"),
        "pinhole status through the installed service:\n{}",
        text(&status)
    );
    let entry = text(&prefix.wine(&["reg", "query", UNINSTALL_KEY]));
    assert!(entry.contains("DisplayVersion") && entry.contains(env!("CARGO_PKG_VERSION")));
    let state = prefix.drive_c("ProgramData/Pinhole");
    assert!(
        state.join("pinholed.log").is_file(),
        "the service keeps its state and log in ProgramData"
    );

    // The uninstaller copies itself away and returns at once: its work is waited for.
    let out = prefix.wine(&[r"C:\Program Files\Pinhole\uninstall.exe", "/S"]);
    assert!(
        out.status.success(),
        "the silent uninstall failed: {}",
        text(&out)
    );
    assert!(
        wait_until(Duration::from_secs(60), || !dir.exists()),
        "{} is left after the uninstall: {:?}",
        dir.display(),
        std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
    );
    let gone = |key: &str| !prefix.wine(&["reg", "query", key]).status.success();
    assert!(gone(SERVICE_KEY), "the service is still registered");
    assert!(gone(UNINSTALL_KEY), "the Add/Remove Programs entry is left");
    assert!(!shortcut.exists(), "the Start menu entry is left");
    assert!(!state.exists(), "the state is left in {}", state.display());
    assert!(!Path::new(&dir).exists());
}
