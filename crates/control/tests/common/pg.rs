//! A throwaway PostgreSQL server for tests: initdb in a temporary directory, listening only on
//! loopback, stopped and deleted on drop. Runs as the `postgres` user when the test runs as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    child: Option<Child>,
    owner: Option<(u32, u32)>,
}

fn find_bin() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    versions.sort();
    versions.pop()
}

fn postgres_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let line = passwd.lines().find(|l| l.starts_with("postgres:"))?;
    let f: Vec<&str> = line.split(':').collect();
    Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(55432)
}

impl Postgres {
    /// Starts a server; none (with a loud message) if PostgreSQL is not installed.
    pub fn start() -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            let _ = pinhole_testkit::skip(
                "the PostgreSQL scenarios",
                "PostgreSQL server binaries not found under /usr/lib/postgresql \
                 (apt-get install --no-install-recommends postgresql; `cargo xtask test` does)",
            );
            return None;
        };
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let owner = if root { postgres_user() } else { None };
        if root && owner.is_none() {
            let _ = pinhole_testkit::skip(
                "the PostgreSQL scenarios",
                "running as root and there is no `postgres` user to run the server as",
            );
            return None;
        }
        let dir =
            std::env::temp_dir().join(format!("pinhole-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut pg = Postgres {
            dir,
            bin,
            port: free_port(),
            child: None,
            owner,
        };
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&pg.dir, Some(uid), Some(gid)).expect("chown temp dir");
        }
        let data = pg.dir.join("data");
        let out = pg
            .cmd("initdb")
            .args([
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
                "-E",
                "UTF8",
                "-D",
            ])
            .arg(&data)
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let child = pg
            .cmd("postgres")
            .arg("-D")
            .arg(&data)
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=200",
            ])
            .args(["-p", &pg.port.to_string(), "-k"])
            .arg(&pg.dir)
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(pg.dir.join("log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            )
            .spawn()
            .expect("start postgres");
        pg.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = pg
                .cmd("pg_isready")
                .args(["-h", "127.0.0.1", "-p", &pg.port.to_string()])
                .output()
                .is_ok_and(|o| o.status.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start: {}",
                pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Some(pg)
    }

    fn cmd(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin.join(name));
        if let Some((uid, gid)) = self.owner {
            use std::os::unix::process::CommandExt;
            c.uid(uid).gid(gid);
        }
        c.current_dir(&self.dir);
        c
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// A new, empty database; its URL.
    pub fn database(&self, name: &str) -> String {
        let out = self
            .cmd("createdb")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                name,
            ])
            .output()
            .expect("run createdb");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGINT: PostgreSQL's fast shutdown.
            // SAFETY: kill with a pid we own.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGINT);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
