//! A `kickq` child process (the worker of the backlog and apps scenarios, `kickq enqueue`), and its memory and
//! CPU time as the kernel counts them: VmRSS sampled from `/proc/<pid>/status`, VmHWM (the kernel's own peak),
//! and user + system time from `/proc/<pid>/stat`.

use super::error::BenchError;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::{Child, Command};

/// Interval between RSS samples.
const SAMPLE: Duration = Duration::from_millis(50);
/// Time a worker gets to drain after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(30);
/// Clock ticks per second of `/proc/<pid>/stat`'s times: Linux's USER_HZ,
/// which the kernel's user ABI fixes at 100 whatever its internal HZ (this
/// crate has no unsafe code to ask `sysconf(_SC_CLK_TCK)`).
const CLOCK_TICKS_PER_SEC: u64 = 100;
/// Settings of the parent that must not leak into a child (a stray
/// `DATABASE_URL` would turn the ledger on, a stray `ZEGO_APP_ID` or
/// `KICKQ_CONFIG` would clash with the apps a child is given).
const SCRUBBED_ENV: &[&str] = &[
    "DATABASE_URL",
    "KICKQ_CONFIG",
    "ZEGO_APP_ID",
    "ZEGO_SERVER_SECRET",
    "ZEGO_SERVER_SECRET_FILE",
    "KICKQ_METRICS_ADDR",
    "KICKQ_PREFETCH",
    "KICKQ_RATE",
    "KICKQ_ALLOW_RATE_ABOVE_DOCUMENTED",
];

/// Memory of a process, in KiB.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Memory {
    /// Resident set now (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set (VmHWM).
    pub hwm_kib: u64,
}

/// Parses VmRSS and VmHWM out of a `/proc/<pid>/status` text.
pub fn parse_status(text: &str) -> Memory {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    Memory {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
    }
}

/// Reads a live process's memory; `None` once it is gone.
pub fn memory(pid: u32) -> Option<Memory> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .map(|t| parse_status(&t))
}

/// User + system CPU time, in clock ticks, out of a `/proc/<pid>/stat` text
/// (fields 14 and 15, counted after the parenthesised command name, which may
/// hold spaces); they include the process's exited threads.
pub fn parse_cpu_ticks(text: &str) -> Option<u64> {
    let (_, rest) = text.rsplit_once(')')?;
    // After the name: field 3 (state) is the first, so utime (14) is the 12th.
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A live process's CPU time (user + system) so far; `None` once it is gone.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_cpu_ticks(&text)?;
    Some(Duration::from_millis(ticks * 1000 / CLOCK_TICKS_PER_SEC))
}

/// A running child with an RSS sampler.
pub struct Sampled {
    child: Child,
    pid: u32,
    max_rss: Arc<AtomicU64>,
    max_hwm: Arc<AtomicU64>,
    sampler: tokio::task::JoinHandle<()>,
}

/// Starts `exe args...` with `env` (and the scrubbed settings removed),
/// stdout discarded, stderr inherited.
pub fn spawn(exe: &Path, args: &[&str], env: &[(&str, String)]) -> Result<Sampled, BenchError> {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true);
    for k in SCRUBBED_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().map_err(|source| BenchError::Io {
        what: format!("starting {}", exe.display()),
        source,
    })?;
    let pid = child.id().unwrap_or(0);
    let (max_rss, max_hwm) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (r, h) = (max_rss.clone(), max_hwm.clone());
    let sampler = tokio::spawn(async move {
        while let Some(m) = memory(pid) {
            r.fetch_max(m.rss_kib, Ordering::Relaxed);
            h.fetch_max(m.hwm_kib, Ordering::Relaxed);
            tokio::time::sleep(SAMPLE).await;
        }
    });
    Ok(Sampled {
        child,
        pid,
        max_rss,
        max_hwm,
        sampler,
    })
}

impl Sampled {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The peak so far: the largest VmRSS sampled and the kernel's VmHWM.
    pub fn peak(&self) -> Memory {
        if let Some(m) = memory(self.pid) {
            self.max_rss.fetch_max(m.rss_kib, Ordering::Relaxed);
            self.max_hwm.fetch_max(m.hwm_kib, Ordering::Relaxed);
        }
        Memory {
            rss_kib: self.max_rss.load(Ordering::Relaxed),
            hwm_kib: self.max_hwm.load(Ordering::Relaxed),
        }
    }

    /// Its CPU time (user + system) so far; zero once it is gone.
    pub fn cpu(&self) -> Duration {
        cpu_time(self.pid).unwrap_or_default()
    }

    /// Whether it has exited, and how.
    pub fn try_exit(&mut self) -> Result<Option<std::process::ExitStatus>, BenchError> {
        self.child.try_wait().map_err(|source| BenchError::Io {
            what: "checking the child".into(),
            source,
        })
    }

    /// Waits for it to exit by itself.
    pub async fn wait(mut self) -> Result<std::process::ExitStatus, BenchError> {
        let status = self.child.wait().await.map_err(|source| BenchError::Io {
            what: "waiting for the child".into(),
            source,
        })?;
        self.sampler.abort();
        Ok(status)
    }

    /// SIGTERM (through `kill`, this crate has no unsafe code), then waits;
    /// kills it if it has not exited within the grace period.
    pub async fn terminate(mut self) -> Result<std::process::ExitStatus, BenchError> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status()
            .await;
        let status = match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(s) => s,
            Err(_) => {
                let _ = self.child.kill().await;
                self.child.wait().await
            }
        };
        self.sampler.abort();
        status.map_err(|source| BenchError::Io {
            what: "stopping the child".into(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_status() {
        let text = "Name:\tkickq\nVmPeak:\t  900 kB\nVmHWM:\t   51234 kB\nVmRSS:\t   40960 kB\n";
        assert_eq!(
            parse_status(text),
            Memory {
                rss_kib: 40960,
                hwm_kib: 51234
            }
        );
        assert_eq!(parse_status(""), Memory::default());
    }

    #[test]
    fn parses_proc_stat_cpu_ticks() {
        let rest = "S 1 2 3 4 5 6 7 8 9 10 250 31 0 0 20 0 9 0 100";
        let cases: &[(String, Option<u64>)] = &[
            (format!("4242 (kickq) {rest}"), Some(281)),
            (format!("4242 (tokio-rt worker) {rest}"), Some(281)),
            (format!("4242 (a) b) {rest}"), Some(281)),
            ("4242 (kickq) S 1 2".to_owned(), None),
            ("no name here".to_owned(), None),
            (String::new(), None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_cpu_ticks(text), *want, "{text}");
        }
    }

    #[test]
    fn reads_its_own_cpu_time() {
        // Spinning makes the reading advance, by whole ticks (10 ms each).
        let before = cpu_time(std::process::id()).expect("this process is alive");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let mut now = before;
        while now < before + Duration::from_millis(30) && start.elapsed() < Duration::from_secs(10) {
            x = x.wrapping_add(std::hint::black_box(1));
            if x.is_multiple_of(1_000_000) {
                now = cpu_time(std::process::id()).expect("still alive");
            }
        }
        assert!(
            now >= before + Duration::from_millis(30),
            "{before:?} -> {now:?} after {:?}",
            start.elapsed()
        );
    }

    #[test]
    fn reads_its_own_memory() {
        let m = memory(std::process::id()).expect("this process is alive");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
