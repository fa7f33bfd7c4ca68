//! Progress of long commands (`enqueue`, `dlq replay`, `dlq purge`): an indicatif bar with rate and ETA on a
//! terminal, a quiet line every few seconds otherwise (logs and CI keep a trace without escape codes).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// Interval of the quiet lines when stderr is not a terminal.
pub(crate) const QUIET_INTERVAL: Duration = Duration::from_secs(5);

/// Counts work done out of a known total and shows it on stderr.
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    unit: &'static str,
    total: u64,
    pos: u64,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// A bar for `total` `unit`s of `what` (e.g. "enqueue", "users").
    pub(crate) fn new(what: &'static str, unit: &'static str, total: u64) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(&format!(
                "{{prefix}} [{{elapsed_precise}}] {{wide_bar}} {{human_pos}}/{{human_len}} {unit} ({{per_sec}}, ETA {{eta}})"
            ))
            .expect("the template is a literal with known keys");
            let b = ProgressBar::new(total).with_style(style).with_prefix(what);
            b.enable_steady_tick(Duration::from_millis(200));
            b
        });
        let now = Instant::now();
        Self {
            bar,
            what,
            unit,
            total,
            pos: 0,
            started: now,
            last_line: now,
        }
    }

    /// Adds `n` to the position.
    pub(crate) fn inc(&mut self, n: u64) {
        self.pos += n;
        match &self.bar {
            Some(b) => b.inc(n),
            None if self.last_line.elapsed() >= QUIET_INTERVAL => {
                self.last_line = Instant::now();
                eprintln!("{}", self.line());
            }
            None => {}
        }
    }

    /// Removes the bar (the caller prints its own summary).
    pub(crate) fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64();
        let rate = if secs > 0.0 { self.pos as f64 / secs } else { 0.0 };
        let eta = if rate > 0.0 {
            format!("{:.0}s", (self.total.saturating_sub(self.pos)) as f64 / rate)
        } else {
            "?".into()
        };
        format!(
            "{}: {}/{} {} ({:.0}/s, ETA {eta})",
            self.what, self.pos, self.total, self.unit, rate
        )
    }
}
