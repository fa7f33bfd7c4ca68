//! A `kickq` child process (the worker of the backlog scenario, `kickq enqueue`), and its memory as the
//! kernel counts it: VmRSS sampled from `/proc/<pid>/status`, and VmHWM, the kernel's own peak.

use super::BenchError;
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
/// Settings of the parent that must not leak into a child (a stray
/// `DATABASE_URL` would turn the ledger on).
const SCRUBBED_ENV: &[&str] = &[
    "DATABASE_URL",
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
    fn reads_its_own_memory() {
        let m = memory(std::process::id()).expect("this process is alive");
        assert!(m.rss_kib > 0 && m.hwm_kib >= m.rss_kib);
    }
}
