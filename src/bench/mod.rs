//! `kickq bench`: scenarios that run kickq and a baseline in the same run, against the local broker and an
//! in-process strict mock-zego, and report figures, ratios and targets.
//!
//! ```text
//! env.rs        the bench's AppIds and secrets, its settings, namespaces and databases it creates and deletes
//! workload.rs   the messages of each scenario and their accounting facts (pure)
//! publish.rs    publishing many messages with pipelined confirms
//! wait.rs       waiting for the mock to have kicked everyone, cheaply
//! runs.rs       one measured run of kickq (in-process) or the baseline against the mock
//! baseline.rs   the naive worker: one call per message, same gate, no coalescing
//! bare.rs       the bare consume-and-ack loop (drain's yardstick)
//! null_api.rs   an in-process API without HTTP (drain's diagnosis: pipeline cost alone)
//! child.rs      a `kickq` child process, its peak RSS and its CPU time
//! figures.rs    figures, targets, reports, the table and the JSON lines
//! sweep.rs light.rs drain.rs backlog.rs enqueue.rs lanes.rs apps.rs wan.rs   one scenario each
//! ```
//!
//! Each scenario is a library function so that `tests/it/bench_smoke.rs` runs
//! them at a tiny scale and checks their accounting (never their timing).

pub mod apps;
pub mod backlog;
pub mod bare;
pub mod baseline;
pub mod child;
pub mod drain;
pub mod enqueue;
pub mod env;
pub mod error;
pub mod figures;
pub mod lanes;
pub mod light;
pub mod null_api;
pub mod publish;
pub mod runs;
pub mod sweep;
pub mod wait;
pub mod wan;
pub mod workload;

pub use env::{BenchEnv, BenchSettings};
pub use error::BenchError;
pub use figures::{Accounting, Figure, Report, Target};

/// One scenario of `kickq bench`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// Coalescing and pacing of a shuffled sweep under the API limit.
    Sweep,
    /// Latency under light load.
    Light,
    /// Throughput with the API unlimited.
    Drain,
    /// Memory while draining a million messages.
    Backlog,
    /// `kickq enqueue` throughput.
    Enqueue,
    /// Live-kick latency while a bulk sweep saturates the budget.
    Lanes,
    /// Many apps at their rates in one worker.
    Apps,
    /// Pacing and live latency with the API 50 to 400 ms away.
    Wan,
}

impl Scenario {
    /// Every scenario, in the order `--scenario all` runs them.
    pub const ALL: [Scenario; 8] = [
        Scenario::Sweep,
        Scenario::Light,
        Scenario::Drain,
        Scenario::Backlog,
        Scenario::Enqueue,
        Scenario::Lanes,
        Scenario::Apps,
        Scenario::Wan,
    ];

    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Sweep => "sweep",
            Scenario::Light => "light",
            Scenario::Drain => "drain",
            Scenario::Backlog => "backlog",
            Scenario::Enqueue => "enqueue",
            Scenario::Lanes => "lanes",
            Scenario::Apps => "apps",
            Scenario::Wan => "wan",
        }
    }

    /// Runs it.
    pub async fn run(self, env: &BenchEnv) -> Result<Report, BenchError> {
        match self {
            Scenario::Sweep => sweep::run(env).await,
            Scenario::Light => light::run(env).await,
            Scenario::Drain => drain::run(env).await,
            Scenario::Backlog => backlog::run(env).await,
            Scenario::Enqueue => enqueue::run(env).await,
            Scenario::Lanes => lanes::run(env).await,
            Scenario::Apps => apps::run(env).await,
            Scenario::Wan => wan::run(env).await,
        }
    }
}
