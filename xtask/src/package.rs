//! `cargo xtask package`: the packages this machine can build — the Linux .deb and .rpm and the
//! Windows installer (NSIS) — into `target/packages/`, naming what it skipped and why. The
//! macOS .pkg needs Apple's `pkgbuild`: `installer/macos/build-pkg.sh` on a Mac (hosted CI).
//! `cargo xtask test` packages the binaries the suite has built and tests the packages.

use crate::{cmd, packages};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The version every package carries: the workspace's.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// wintun, the TUN driver for Windows, signed by WireGuard LLC: where it comes from and the
/// SHA-256 of the archive, from wintun.net.
const WINTUN_URL: &str = "https://www.wintun.net/builds/wintun-0.14.1.zip";
const WINTUN_ZIP_SHA256: &str = "07c256185d6ee3652e09fa55c0b673e2624b565e02c4b9091c79ca7d2f24ef51";

/// What goes into the Linux packages.
pub struct LinuxBinaries {
    pub pinhole: PathBuf,
    pub pinholed: PathBuf,
    pub app: PathBuf,
}

/// What goes into the Windows installer (the app's WebView2 loader comes with it).
pub struct WindowsBinaries {
    pub dir: PathBuf,
    /// The signed wintun.dll; None only for a test installer, which says so in its name.
    pub wintun: Option<PathBuf>,
}

/// `cargo xtask package`: release builds, then every package this machine can make;
/// `cargo xtask package --test`: packages of the test builds, tested (what `cargo xtask test`
/// does at its end).
pub fn run(args: &[&str]) -> Result<()> {
    match args {
        [] => {}
        ["--test"] => {
            crate::require_root("the package tests (dpkg --install on this machine)")?;
            std::env::set_var(pinhole_testkit::REQUIRE_ALL, "1");
            crate::ui::build()?;
            crate::build_release_binaries()?;
            cmd("cargo", &["build", "-p", "pinhole-app"])?;
            let mut summary = crate::summary::Summary::default();
            let result = test(&mut summary, true);
            summary.print(result.as_ref().err().map(|e| format!("{e:#}")).as_deref());
            return result;
        }
        [a, ..] => bail!(
            "cargo xtask package [--test] (got {a}); WINTUN_DLL=path names a signed wintun.dll"
        ),
    }
    let out = crate::root().join("target/packages");
    std::fs::create_dir_all(&out)?;
    crate::ui::build()?;
    let release = build_programs(Profile::Release, None, &[])?;
    let linux = LinuxBinaries {
        pinhole: release.join("pinhole"),
        pinholed: release.join("pinholed"),
        app: release.join("pinhole-app"),
    };
    let mut built = Vec::new();
    let mut skipped = Vec::new();
    built.push(deb(&linux, &out)?);
    built.push(rpm(&linux, &out)?);
    match wintun_dll() {
        Ok(wintun) => {
            let dir = build_programs(Profile::Release, Some(crate::windows::WINDOWS), &[])?;
            let bins = WindowsBinaries {
                dir,
                wintun: Some(wintun),
            };
            built.push(nsis(&bins, &out)?);
        }
        Err(why) => skipped.push(format!("Windows installer: {why:#}")),
    }
    skipped.push(
        "macOS .pkg: pkgbuild and productbuild are Apple's (installer/macos/build-pkg.sh on a Mac; the hosted CI's macOS job)".into(),
    );
    skipped.push("Windows MSI: WiX runs on Windows (the hosted CI's Windows job)".into());
    eprintln!("\nbuilt:");
    for p in &built {
        eprintln!("  {}", p.display());
    }
    eprintln!("skipped:");
    for s in &skipped {
        eprintln!("  !!! {s}");
    }
    Ok(())
}

/// Packages the binaries the test run has built (release pinholed and pinhole, the app's
/// debug build that its end-to-end test ran, and with `windows` the Windows debug builds and
/// no wintun) into `target/packages/test` and runs the package tests (`crates/install-tests`)
/// on them.
pub fn test(summary: &mut crate::summary::Summary, windows: bool) -> Result<()> {
    let root = crate::root();
    let out = root.join("target/packages/test");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    packages::ensure(&[
        ("rpmbuild", "rpm"),
        ("makensis", "nsis"),
        ("7z", "p7zip-full"),
    ])?;
    let release = root.join("target/release");
    let linux = LinuxBinaries {
        pinhole: release.join("pinhole"),
        pinholed: release.join("pinholed"),
        app: root.join("target/debug/pinhole-app"),
    };
    deb(&linux, &out)?;
    rpm(&linux, &out)?;
    let mut env = vec![("PINHOLE_PACKAGES_DIR", out.to_string_lossy().into_owned())];
    let mut args = vec!["-p", "pinhole-install-tests"];
    if windows {
        let wine = crate::windows::wine_env()?;
        let dir = build_programs(Profile::Debug, Some(crate::windows::WINDOWS), &wine)?;
        nsis(&WindowsBinaries { dir, wintun: None }, &out)?;
        env.extend(wine);
    } else {
        // No Windows target here (already named in the summary): the installer's test is
        // left out by name, and said so.
        summary.skip(
            "the Windows installer's build and test",
            "the Windows target cannot be installed here",
        );
        args.extend(["--test", "linux_packages", "--test", "service_files"]);
    }
    summary.cargo_test("", &args, &env)
}

enum Profile {
    Debug,
    Release,
}

/// Builds what the packages hold (pinholed, pinhole, the app) for `target` (this machine's
/// when None), with `envs`, and returns the directory they are in.
fn build_programs(
    profile: Profile,
    target: Option<&str>,
    envs: &[(&str, String)],
) -> Result<PathBuf> {
    let mut args = vec!["build"];
    let mut dir = crate::root().join("target");
    if let Some(t) = target {
        args.extend(["--target", t]);
        dir = dir.join(t);
    }
    match profile {
        Profile::Debug => dir = dir.join("debug"),
        Profile::Release => {
            args.push("--release");
            dir = dir.join("release");
        }
    }
    args.extend([
        "-p",
        "pinhole-daemon",
        "-p",
        "pinhole-cli",
        "-p",
        "pinhole-app",
    ]);
    crate::cmd_env("cargo", &args, envs)?;
    Ok(dir)
}

/// Lays out the files both Linux packages install, under `stage`.
fn stage_linux(bins: &LinuxBinaries, stage: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(stage);
    let root = crate::root();
    let put = |from: &Path, to: &str, mode: u32| -> Result<()> {
        let dest = stage.join(to);
        if let Some(dir) = dest.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::copy(from, &dest)
            .with_context(|| format!("cannot copy {} into the package", from.display()))?;
        set_mode(&dest, mode)
    };
    for (bin, name) in [
        (&bins.pinhole, "pinhole"),
        (&bins.pinholed, "pinholed"),
        (&bins.app, "pinhole-app"),
    ] {
        let dest = format!("usr/bin/{name}");
        put(bin, &dest, 0o755)?;
        // Debug information stays in the build; the package carries the code.
        cmd(
            "strip",
            &["--strip-debug", &stage.join(&dest).to_string_lossy()],
        )?;
    }
    // (source in the repository, where it is installed); all 0644.
    let files = [
        (
            "installer/linux/pinholed.service",
            "usr/lib/systemd/system/pinholed.service",
        ),
        (
            "installer/linux/pinhole.sysusers",
            "usr/lib/sysusers.d/pinhole.conf",
        ),
        (
            "installer/linux/pinhole.desktop",
            "usr/share/applications/pinhole.desktop",
        ),
        (
            "icons/app/32x32.png",
            "usr/share/icons/hicolor/32x32/apps/pinhole.png",
        ),
        (
            "icons/app/64x64.png",
            "usr/share/icons/hicolor/64x64/apps/pinhole.png",
        ),
        (
            "icons/app/128x128.png",
            "usr/share/icons/hicolor/128x128/apps/pinhole.png",
        ),
        (
            "icons/app/128x128@2x.png",
            "usr/share/icons/hicolor/256x256/apps/pinhole.png",
        ),
        ("installer/linux/doc/README", "usr/share/doc/pinhole/README"),
        (
            "installer/linux/doc/copyright",
            "usr/share/doc/pinhole/copyright",
        ),
    ];
    for (from, to) in files {
        put(&root.join(from), to, 0o644)?;
    }
    Ok(())
}

/// Builds `pinhole_VERSION_ARCH.deb` in `out` with dpkg-deb (files owned by root).
pub fn deb(bins: &LinuxBinaries, out: &Path) -> Result<PathBuf> {
    let stage = crate::root().join("target/packages/deb-root");
    stage_linux(bins, &stage)?;
    let debian = stage.join("DEBIAN");
    std::fs::create_dir_all(&debian)?;
    for script in ["postinst", "prerm", "postrm"] {
        let dest = debian.join(script);
        std::fs::copy(
            crate::root().join("installer/linux/deb").join(script),
            &dest,
        )?;
        set_mode(&dest, 0o755)?;
    }
    let arch = output("dpkg", &["--print-architecture"])?;
    let size_kib = output("du", &["-sk", "--exclude=DEBIAN", &stage.to_string_lossy()])?
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .to_string();
    let control = format!(
        "Package: pinhole\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: Pinhole developers <dev@pinhole.invalid>\n\
         Installed-Size: {size_kib}\n\
         Depends: libc6, libgtk-3-0, libwebkit2gtk-4.1-0, passwd, procps\n\
         Recommends: libayatana-appindicator3-1, iproute2\n\
         Section: net\n\
         Priority: optional\n\
         Description: peer-to-peer mesh VPN (app, CLI and the pinholed service)\n \
         Pinhole connects your devices directly, peer to peer, through NATs where it\n \
         can and through a relay where it cannot. pinholed (a systemd service) owns\n \
         the tunnel; the app and the pinhole command talk to it as members of the\n \
         group pinhole.\n"
    );
    std::fs::write(debian.join("control"), control)?;
    let deb = out.join(format!("pinhole_{VERSION}_{arch}.deb"));
    cmd(
        "dpkg-deb",
        &[
            "--root-owner-group",
            "-Zxz",
            "--build",
            &stage.to_string_lossy(),
            &deb.to_string_lossy(),
        ],
    )?;
    Ok(deb)
}

/// Builds `pinhole-VERSION-1.x86_64.rpm` in `out` with rpmbuild.
pub fn rpm(bins: &LinuxBinaries, out: &Path) -> Result<PathBuf> {
    packages::ensure(&[("rpmbuild", "rpm")])?;
    let work = crate::root().join("target/packages/rpm");
    let stage = work.join("stage");
    stage_linux(bins, &stage)?;
    let topdir = work.join("top");
    let _ = std::fs::remove_dir_all(&topdir);
    let spec = crate::root().join("installer/linux/rpm/pinhole.spec");
    cmd(
        "rpmbuild",
        &[
            "-bb",
            "--quiet",
            "--define",
            &format!("_topdir {}", topdir.display()),
            "--define",
            &format!("stage {}", stage.display()),
            "--define",
            &format!("pkgversion {VERSION}"),
            &spec.to_string_lossy(),
        ],
    )?;
    let name = format!("pinhole-{VERSION}-1.x86_64.rpm");
    let built = topdir.join("RPMS/x86_64").join(&name);
    let dest = out.join(&name);
    std::fs::copy(&built, &dest)
        .with_context(|| format!("rpmbuild left no {}", built.display()))?;
    Ok(dest)
}

/// Builds the Windows installer with makensis from `installer/windows/pinhole.nsi`.
pub fn nsis(bins: &WindowsBinaries, out: &Path) -> Result<PathBuf> {
    packages::ensure(&[("makensis", "nsis")])?;
    let stage = crate::root().join("target/packages/nsis-stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    for name in [
        "pinholed.exe",
        "pinhole.exe",
        "pinhole-app.exe",
        "WebView2Loader.dll",
    ] {
        std::fs::copy(bins.dir.join(name), stage.join(name))
            .with_context(|| format!("no {name} in {}", bins.dir.display()))?;
    }
    std::fs::copy(
        crate::root().join("icons/app/icon.ico"),
        stage.join("pinhole.ico"),
    )?;
    let name = match &bins.wintun {
        Some(dll) => {
            std::fs::copy(dll, stage.join("wintun.dll"))?;
            format!("pinhole-{VERSION}-setup-x64.exe")
        }
        None => format!("pinhole-{VERSION}-setup-x64-TEST-without-wintun.exe"),
    };
    let dest = out.join(&name);
    let mut args = vec![
        "-V2".to_string(),
        format!("-DVERSION={VERSION}"),
        format!("-DSTAGE={}", stage.display()),
        format!("-DOUTFILE={}", dest.display()),
    ];
    if bins.wintun.is_some() {
        args.push("-DWINTUN".into());
    }
    args.push(
        crate::root()
            .join("installer/windows/pinhole.nsi")
            .to_string_lossy()
            .into_owned(),
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cmd("makensis", &args)?;
    Ok(dest)
}

/// The signed wintun.dll (amd64): WINTUN_DLL names one, else wintun.net's release is fetched
/// and its archive checked against the known SHA-256. An error says why there is none.
fn wintun_dll() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("WINTUN_DLL") {
        let path = PathBuf::from(path);
        if !path.is_file() {
            bail!("WINTUN_DLL={} is not a file", path.display());
        }
        return Ok(path);
    }
    let dir = crate::root().join("target/packages/wintun");
    std::fs::create_dir_all(&dir)?;
    let zip = dir.join("wintun.zip");
    let fetched = Command::new("curl")
        .args(["-fsSL", "--max-time", "60", "-o"])
        .arg(&zip)
        .arg(WINTUN_URL)
        .status();
    if !fetched.is_ok_and(|s| s.success()) {
        bail!("no signed wintun.dll: set WINTUN_DLL to one, or allow the download of {WINTUN_URL} (it failed here)");
    }
    let sum = output("sha256sum", &[&zip.to_string_lossy()])?;
    if sum.split_whitespace().next() != Some(WINTUN_ZIP_SHA256) {
        bail!("{WINTUN_URL} does not have the expected SHA-256 {WINTUN_ZIP_SHA256} ({sum})");
    }
    cmd(
        "unzip",
        &[
            "-o",
            "-q",
            &zip.to_string_lossy(),
            "wintun/bin/amd64/wintun.dll",
            "-d",
            &dir.to_string_lossy(),
        ],
    )?;
    Ok(dir.join("wintun/bin/amd64/wintun.dll"))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// A command's standard output, trimmed; a failure is an error.
fn output(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
