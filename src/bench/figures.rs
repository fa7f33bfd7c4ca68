//! What a scenario reports: figures (kickq beside its baseline, their ratio, the target and pass/miss), the
//! accounting of every user, and the two renderings of a report: a table and one JSON object.

use super::workload::Pair;
use std::collections::HashSet;
use std::fmt::Write as _;

/// A target a figure must meet.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// The figure must be at least this.
    AtLeast(f64),
    /// The figure must be at most this.
    AtMost(f64),
}

impl Target {
    /// Whether `value` meets the target.
    pub fn met(self, value: f64) -> bool {
        match self {
            Target::AtLeast(t) => value >= t,
            Target::AtMost(t) => value <= t,
        }
    }

    /// E.g. `>= 0.98`.
    pub fn label(self) -> String {
        match self {
            Target::AtLeast(t) => format!(">= {}", num(t)),
            Target::AtMost(t) => format!("<= {}", num(t)),
        }
    }
}

/// One measured quantity: kickq's value, the baseline's in the same run, and
/// an optional target on kickq's value.
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    /// What it is, with its unit, e.g. `wall (s)`.
    pub name: String,
    /// kickq's value.
    pub kickq: f64,
    /// The baseline's value in the same run, if it has one.
    pub baseline: Option<f64>,
    /// What kickq's value must meet.
    pub target: Option<Target>,
}

impl Figure {
    /// A figure without baseline or target.
    pub fn new(name: impl Into<String>, kickq: f64) -> Self {
        Self {
            name: name.into(),
            kickq,
            baseline: None,
            target: None,
        }
    }

    /// With the baseline's value.
    pub fn vs(mut self, baseline: f64) -> Self {
        self.baseline = Some(baseline);
        self
    }

    /// With a target.
    pub fn target(mut self, t: Target) -> Self {
        self.target = Some(t);
        self
    }

    /// kickq / baseline, when both exist and the baseline is not zero.
    pub fn ratio(&self) -> Option<f64> {
        self.baseline.filter(|b| *b != 0.0).map(|b| self.kickq / b)
    }

    /// Whether the target is met; `None` without a target.
    pub fn pass(&self) -> Option<bool> {
        self.target.map(|t| t.met(self.kickq))
    }
}

/// Where every requested user went, for kickq and the baseline.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Accounting {
    /// Messages published per run.
    pub messages: u64,
    /// Distinct (room, user) pairs requested.
    pub expected: u64,
    /// Requested pairs kickq kicked.
    pub kickq_kicked: u64,
    /// Pairs kickq kicked that nobody requested.
    pub kickq_unexpected: u64,
    /// Messages kickq acked, when known.
    pub kickq_acked: Option<u64>,
    /// Requested pairs the baseline kicked, when it ran.
    pub baseline_kicked: Option<u64>,
    /// Pairs the baseline kicked that nobody requested.
    pub baseline_unexpected: Option<u64>,
    /// Messages the baseline acked, when it ran.
    pub baseline_acked: Option<u64>,
    /// Whether kickq and the baseline kicked exactly the same set of pairs.
    pub same_set: Option<bool>,
}

impl Accounting {
    /// Every requested pair kicked, nothing else, every message acked, and
    /// kickq and the baseline in agreement.
    pub fn ok(&self) -> bool {
        self.kickq_kicked == self.expected
            && self.kickq_unexpected == 0
            && self.kickq_acked.is_none_or(|a| a == self.messages)
            && self.baseline_kicked.is_none_or(|k| k == self.expected)
            && self.baseline_unexpected.is_none_or(|u| u == 0)
            && self.baseline_acked.is_none_or(|a| a == self.messages)
            && self.same_set != Some(false)
    }

    /// One line for the table.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "accounting {}: {} messages; kickq kicked {}/{} pairs ({} unrequested)",
            if self.ok() { "ok" } else { "FAILED" },
            self.messages,
            self.kickq_kicked,
            self.expected,
            self.kickq_unexpected
        );
        if let Some(a) = self.kickq_acked {
            let _ = write!(s, ", acked {a}");
        }
        if let (Some(k), Some(u)) = (self.baseline_kicked, self.baseline_unexpected) {
            let _ = write!(s, "; baseline kicked {k}/{} ({u} unrequested)", self.expected);
        }
        if let Some(a) = self.baseline_acked {
            let _ = write!(s, ", acked {a}");
        }
        if let Some(same) = self.same_set {
            let _ = write!(s, "; same set: {}", if same { "yes" } else { "NO" });
        }
        s
    }
}

/// Requested pairs found in `kicked`, and pairs in `kicked` not requested.
pub fn tally(expected: &HashSet<Pair>, kicked: &HashSet<Pair>) -> (u64, u64) {
    let found = expected.iter().filter(|p| kicked.contains(*p)).count() as u64;
    (found, kicked.len() as u64 - found)
}

/// Whether the scenario ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// It ran; its figures stand.
    Ran,
    /// It did not run, and why.
    Skipped(String),
}

/// One scenario's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The scenario's name.
    pub scenario: &'static str,
    /// Ran or skipped.
    pub status: Status,
    /// Its parameters, e.g. `("rate", "50")`.
    pub params: Vec<(String, String)>,
    /// Its figures.
    pub figures: Vec<Figure>,
    /// Where every user went; `None` where the scenario kicks nobody.
    pub accounting: Option<Accounting>,
    /// Remarks printed under the table.
    pub notes: Vec<String>,
}

impl Report {
    /// A report with no figures yet.
    pub fn new(scenario: &'static str) -> Self {
        Self {
            scenario,
            status: Status::Ran,
            params: Vec::new(),
            figures: Vec::new(),
            accounting: None,
            notes: Vec::new(),
        }
    }

    /// A scenario that did not run.
    pub fn skipped(scenario: &'static str, why: impl Into<String>) -> Self {
        Self {
            status: Status::Skipped(why.into()),
            ..Self::new(scenario)
        }
    }

    /// Adds a parameter.
    pub fn param(&mut self, name: &str, value: impl ToString) {
        self.params.push((name.to_owned(), value.to_string()));
    }

    /// The figure of that name.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    /// Figures whose target was missed.
    pub fn misses(&self) -> Vec<&Figure> {
        self.figures.iter().filter(|f| f.pass() == Some(false)).collect()
    }

    /// The report as a plain-text table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "== {} ({})", self.scenario, params.join(", "));
        if let Status::Skipped(why) = &self.status {
            let _ = writeln!(out, "skipped: {why}");
            return out;
        }
        let _ = writeln!(
            out,
            "{:<34} {:>12} {:>12} {:>9}  {:<12} result",
            "figure", "kickq", "baseline", "ratio", "target"
        );
        for f in &self.figures {
            let _ = writeln!(
                out,
                "{:<34} {:>12} {:>12} {:>9}  {:<12} {}",
                f.name,
                num(f.kickq),
                f.baseline.map(num).unwrap_or_else(|| "-".into()),
                f.ratio().map(num).unwrap_or_else(|| "-".into()),
                f.target.map(Target::label).unwrap_or_default(),
                match f.pass() {
                    Some(true) => "pass",
                    Some(false) => "MISS",
                    None => "",
                }
            );
        }
        if let Some(a) = &self.accounting {
            let _ = writeln!(out, "{}", a.summary());
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }

    /// The report as one JSON object (print it on one line).
    pub fn json(&self) -> serde_json::Value {
        let figures: Vec<serde_json::Value> = self
            .figures
            .iter()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "kickq": f.kickq,
                    "baseline": f.baseline,
                    "ratio": f.ratio(),
                    "target": f.target.map(Target::label),
                    "pass": f.pass(),
                })
            })
            .collect();
        let params: serde_json::Map<String, serde_json::Value> = self
            .params
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        let (status, skipped) = match &self.status {
            Status::Ran => ("ran", None),
            Status::Skipped(why) => ("skipped", Some(why.clone())),
        };
        serde_json::json!({
            "scenario": self.scenario,
            "status": status,
            "skipped": skipped,
            "params": params,
            "figures": figures,
            "accounting": self.accounting.as_ref().map(|a| serde_json::json!({
                "ok": a.ok(),
                "messages": a.messages,
                "expected": a.expected,
                "kickq_kicked": a.kickq_kicked,
                "kickq_unexpected": a.kickq_unexpected,
                "kickq_acked": a.kickq_acked,
                "baseline_kicked": a.baseline_kicked,
                "baseline_unexpected": a.baseline_unexpected,
                "baseline_acked": a.baseline_acked,
                "same_set": a.same_set,
            })),
            "notes": self.notes,
        })
    }
}

/// A number with as many decimals as its size deserves.
pub fn num(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || (v.fract() == 0.0 && a < 1e15) || a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// The `q`-quantile (0 to 1) of sorted values, nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_targets_and_rendering() {
        let f = Figure::new("efficiency", 0.99).vs(0.2).target(Target::AtLeast(0.98));
        assert_eq!(f.pass(), Some(true));
        assert!((f.ratio().unwrap() - 4.95).abs() < 1e-9);
        assert_eq!(Figure::new("x", 1.0).vs(0.0).ratio(), None);
        let mut r = Report::new("sweep");
        r.param("rate", 50);
        r.figures.push(f);
        r.figures
            .push(Figure::new("206 answers", 3.0).target(Target::AtMost(0.0)));
        assert_eq!(r.misses().len(), 1);
        let t = r.table();
        assert!(
            t.contains("MISS") && t.contains(">= 0.98") && t.contains("rate=50"),
            "{t}"
        );
        let j = r.json().to_string();
        assert!(!j.contains('\n'));
        assert!(j.contains("\"scenario\":\"sweep\""), "{j}");
        assert!(Report::skipped("enqueue", "not here")
            .table()
            .contains("skipped: not here"));
    }

    #[test]
    fn quantiles_and_numbers() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(num(4012.0), "4012");
        assert_eq!(num(0.9876), "0.988");
        assert_eq!(num(1.234), "1.23");
    }

    #[test]
    fn accounting_needs_everything() {
        let mut a = Accounting {
            messages: 3,
            expected: 2,
            kickq_kicked: 2,
            kickq_acked: Some(3),
            ..Accounting::default()
        };
        assert!(a.ok());
        a.same_set = Some(false);
        assert!(!a.ok());
        a.same_set = Some(true);
        a.baseline_kicked = Some(1);
        assert!(!a.ok());
    }
}
