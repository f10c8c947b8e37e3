//! What every `cargo xtask bench …` leaves behind and how it counts CPU: the run's Markdown and
//! a JSON record of the same figures under target/bench/, both headed by when, where and what
//! was measured (date, machine, commit, each counterpart's version); CPU time read in
//! nanoseconds from every thread of a process and turned into cores per Gbit/s one way for
//! every bench.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The programs a bench measured or measured with, by name, and their versions.
#[derive(Debug, Default, Clone)]
pub struct Versions(BTreeMap<String, String>);

impl Versions {
    pub fn new() -> Self {
        let mut v = Versions::default();
        v.add("pinholed", &commit());
        v
    }

    pub fn add(&mut self, program: &str, version: &str) {
        self.0.insert(program.to_string(), version.to_string());
    }

    /// Adds `program` with the first line `program ARGS` prints (e.g. `iperf3 --version`).
    pub fn add_from(&mut self, program: &str, args: &[&str]) {
        let version = first_line(program, args).unwrap_or_else(|| "unknown".into());
        self.add(program, &version);
    }
}

/// Writes `target/bench/NAME.md` (a heading line, then `markdown`) and `NAME.json` (the same
/// heading as fields, with `figures`), prints the Markdown, and returns the Markdown's path.
pub fn write(name: &str, markdown: &str, figures: Value, versions: &Versions) -> Result<PathBuf> {
    let machine = machine();
    let date = date();
    let commit = commit();
    let mut md = String::new();
    let _ = writeln!(md, "Run {date} at {commit} on {}.", machine_line(&machine));
    let _ = writeln!(
        md,
        "Versions: {}.\n",
        versions
            .0
            .iter()
            .map(|(p, v)| format!("{p} {v}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    md.push_str(markdown);
    let record = json!({
        "bench": name,
        "date": date,
        "commit": commit,
        "machine": machine,
        "versions": versions.0,
        "figures": figures,
    });
    let dir = crate::root().join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let md_path = dir.join(format!("{name}.md"));
    std::fs::write(&md_path, &md).with_context(|| format!("writing {}", md_path.display()))?;
    let json_path = dir.join(format!("{name}.json"));
    std::fs::write(&json_path, serde_json::to_string_pretty(&record)? + "\n")
        .with_context(|| format!("writing {}", json_path.display()))?;
    println!("\n{md}");
    println!(
        "(written to {} and {})",
        md_path.display(),
        json_path.display()
    );
    Ok(md_path)
}

/// CPU time `pid` has used so far, in nanoseconds: the sum over its live threads of the time
/// the scheduler ran them (`/proc/PID/task/TID/schedstat`, first field). Clock ticks
/// (`/proc/PID/stat`) are 10 ms here, too coarse for an idle process. 0 if the process is gone.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// The CPU time of several processes, summed.
pub fn cpu_ns_of(pids: &[u32]) -> u64 {
    pids.iter().map(|&p| cpu_ns(p)).sum()
}

/// Cores per Gbit/s: the CPU time spent over a wall-clock window, as cores busy on average,
/// divided by the Gbit/s carried in it. None when nothing was carried.
pub fn cores_per_gbit(cpu_ns: u64, wall: Duration, bits_per_second: f64) -> Option<f64> {
    let gbps = bits_per_second / 1e9;
    let wall = wall.as_secs_f64();
    (gbps > 0.0 && wall > 0.0).then(|| cpu_ns as f64 / 1e9 / wall / gbps)
}

/// The share of one core used over a window, in percent.
pub fn percent_of_core(cpu_ns: u64, wall: Duration) -> f64 {
    cpu_ns as f64 / 1e9 / wall.as_secs_f64().max(1e-9) * 100.0
}

fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0);
    let os = std::fs::read_to_string("/etc/os-release")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|l| l.trim_matches('"').to_string())
        .unwrap_or_else(|| "unknown".into());
    json!({
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "cpu": model,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": first_line("uname", &["-r"]).unwrap_or_else(|| "unknown".into()),
        "os": os,
    })
}

fn machine_line(m: &Value) -> String {
    format!(
        "{} cores ({}), {} GiB, {}, Linux {}",
        m["cores"],
        m["cpu"].as_str().unwrap_or(""),
        m["memory_gib"],
        m["os"].as_str().unwrap_or(""),
        m["kernel"].as_str().unwrap_or("")
    )
}

/// The commit of the working tree, with `+changes` when it has uncommitted ones.
pub fn commit() -> String {
    let root = crate::root();
    let hash = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(&root)
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if dirty {
        format!("{hash}+changes")
    } else {
        hash
    }
}

fn date() -> String {
    first_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_else(|| "unknown".into())
}

/// The first non-empty line `program ARGS` prints on stdout or stderr.
pub fn first_line(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cores_per_gbit_is_cores_busy_over_gbits_carried() {
        // 3 CPU seconds in 2 s of wall time = 1.5 cores; at 3 Gbit/s that is 0.5 per Gbit/s.
        let c = cores_per_gbit(3_000_000_000, Duration::from_secs(2), 3e9).unwrap();
        assert!((c - 0.5).abs() < 1e-9, "{c}");
        assert_eq!(cores_per_gbit(1, Duration::from_secs(1), 0.0), None);
        let p = percent_of_core(5_000_000, Duration::from_secs(10));
        assert!((p - 0.05).abs() < 1e-9, "{p}");
    }

    #[test]
    fn this_process_cpu_time_is_read_in_nanoseconds() {
        let me = std::process::id();
        let before = cpu_ns(me);
        // Burn 2 ms of CPU (a fifth of one 10 ms clock tick), then sleep so that the kernel
        // books this thread's run time (a running thread's schedstat is updated when it
        // switches out or at a tick).
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(2) {
            x = x.wrapping_mul(31).wrapping_add(std::hint::black_box(1));
        }
        std::hint::black_box(x);
        std::thread::sleep(Duration::from_millis(1));
        let after = cpu_ns(me);
        assert!(
            after.saturating_sub(before) >= 1_000_000,
            "{after} - {before} < 1 ms"
        );
        assert!(before > 0, "no schedstat for this process");
        assert_eq!(cpu_ns(u32::MAX), 0);
    }
}
