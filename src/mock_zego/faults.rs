//! Scripted faults: the rule types, glob matching of room and user ids, and the pure decision of which rules fire for one call.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One scripted fault. Rules are applied to calls that passed auth, the rate
/// limit and the parameter checks, in list order.
///
/// Invariant (checked by [`FaultRule::validate`]): `probability`, when set, is
/// within `0.0..=1.0`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// Glob over the room id: `*` matches any run of characters, everything
    /// else matches itself. `*` alone matches every room.
    #[serde(default = "any_room")]
    pub room: String,
    /// Fire only for the first N calls this rule matches (counted since the
    /// rules were set or the mock reset); `None` means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first: Option<u64>,
    /// Fire with this probability per matching call; `None` means always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probability: Option<f64>,
    /// What happens when the rule fires.
    pub effect: FaultEffect,
}

fn any_room() -> String {
    "*".into()
}

/// What a firing rule does to the call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultEffect {
    /// Answer HTTP 200 with this return code; nobody is kicked.
    Code(i64),
    /// Answer HTTP 500 with an HTML page.
    Http500,
    /// Wait this many milliseconds before answering; latencies of several
    /// firing rules add up, and later rules still apply.
    LatencyMs(u64),
    /// Never answer: hold the connection until the client gives up or the
    /// mock shuts down.
    Hang,
    /// Drop the connection without any HTTP response.
    Reset,
    /// Users matching this glob are not in the room: a call naming any of
    /// them answers 50002 and kicks nobody. The rule matches a call only when
    /// one of its users matches.
    AbsentUsers(String),
    /// Answer as usual (a kick answers code 0) but with a `RequestId` this many
    /// bytes long: the usual id padded with ASCII. Not terminal: later rules
    /// still apply, and the first such rule to fire sets the length.
    RequestIdBytes(usize),
}

impl FaultRule {
    /// A rule for rooms matching `room` that always fires.
    pub fn new(room: impl Into<String>, effect: FaultEffect) -> Self {
        Self {
            room: room.into(),
            first: None,
            probability: None,
            effect,
        }
    }

    /// Checks the invariant; the error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        match self.probability {
            Some(p) if !(0.0..=1.0).contains(&p) => Err(format!("probability {p} is not within 0..=1")),
            _ => Ok(()),
        }
    }
}

/// How a call ends when a rule decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Terminal {
    /// HTTP 200 with this code.
    Code(i64),
    /// HTTP 500, HTML body.
    Http500,
    /// No answer until shutdown.
    Hang,
    /// Connection dropped.
    Reset,
}

/// The combined effect of the rules on one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Plan {
    /// Total added latency.
    pub latency: Duration,
    /// The first terminal effect that fired, if any; it wins over `absent`.
    pub terminal: Option<Terminal>,
    /// An absent-users rule fired: answer 50002 and kick nobody.
    pub absent: bool,
    /// A request-id rule fired: the answer's `RequestId` has this many bytes.
    pub request_id_bytes: Option<usize>,
}

/// Decides the rules' effect on a call to `room` for `users`.
///
/// `matched[i]` counts the calls rule `i` matched so far and is advanced here
/// (the caller keeps it beside the rules, same length). `roll` yields uniform
/// numbers in `0.0..1.0` and is called once per matching rule that has a
/// probability, so tests can script it. Evaluation stops at the first
/// terminal effect: later rules neither fire nor count the call.
pub fn plan(
    rules: &[FaultRule],
    matched: &mut [u64],
    room: &str,
    users: &[String],
    roll: &mut dyn FnMut() -> f64,
) -> Plan {
    debug_assert_eq!(rules.len(), matched.len());
    let mut plan = Plan::default();
    for (rule, count) in rules.iter().zip(matched.iter_mut()) {
        if !glob(&rule.room, room) {
            continue;
        }
        if let FaultEffect::AbsentUsers(pattern) = &rule.effect {
            if !users.iter().any(|u| glob(pattern, u)) {
                continue;
            }
        }
        *count += 1;
        if rule.first.is_some_and(|n| *count > n) {
            continue;
        }
        if rule.probability.is_some_and(|p| roll() >= p) {
            continue;
        }
        let terminal = match &rule.effect {
            FaultEffect::LatencyMs(ms) => {
                plan.latency += Duration::from_millis(*ms);
                continue;
            }
            FaultEffect::AbsentUsers(_) => {
                plan.absent = true;
                continue;
            }
            FaultEffect::RequestIdBytes(n) => {
                plan.request_id_bytes.get_or_insert(*n);
                continue;
            }
            FaultEffect::Code(code) => Terminal::Code(*code),
            FaultEffect::Http500 => Terminal::Http500,
            FaultEffect::Hang => Terminal::Hang,
            FaultEffect::Reset => Terminal::Reset,
        };
        plan.terminal = Some(terminal);
        break;
    }
    plan
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters
/// (including none) and every other character matches itself.
pub fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    // Where the last `*` was and the text position it currently absorbs up to:
    // on a mismatch, let that star absorb one more character and retry.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_table() {
        let table: &[(&str, &str, bool)] = &[
            ("*", "", true),
            ("*", "anything at all", true),
            ("", "", true),
            ("", "a", false),
            ("room", "room", true),
            ("room", "room2", false),
            ("bad-*", "bad-", true),
            ("bad-*", "bad-42", true),
            ("bad-*", "bad", false),
            ("bad-*", "xbad-1", false),
            ("*-end", "the-end", true),
            ("*-end", "the-ends", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "aXbYbZc", true),
            ("a*b*c", "aXbYc!", false),
            ("**", "x", true),
            ("*a*", "banana", true),
            ("*z*", "banana", false),
            ("é*字", "é漢字", true),
            ("?", "x", false),
        ];
        for &(pattern, text, expected) in table {
            assert_eq!(glob(pattern, text), expected, "{pattern:?} vs {text:?}");
        }
    }

    fn users(ids: &[&str]) -> Vec<String> {
        ids.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn plan_table() {
        struct Case {
            name: &'static str,
            rules: Vec<FaultRule>,
            room: &'static str,
            users: &'static [&'static str],
            roll: f64,
            want: Plan,
        }
        let code = |c| Some(Terminal::Code(c));
        let with = |mut r: FaultRule, first: Option<u64>, p: Option<f64>| {
            r.first = first;
            r.probability = p;
            r
        };
        let cases = vec![
            Case {
                name: "no rules",
                rules: vec![],
                room: "r",
                users: &["u"],
                roll: 0.0,
                want: Plan::default(),
            },
            Case {
                name: "room mismatch",
                rules: vec![FaultRule::new("bad-*", FaultEffect::Code(2))],
                room: "good",
                users: &["u"],
                roll: 0.0,
                want: Plan::default(),
            },
            Case {
                name: "fixed code",
                rules: vec![FaultRule::new("bad-*", FaultEffect::Code(2))],
                room: "bad-1",
                users: &["u"],
                roll: 0.0,
                want: Plan {
                    terminal: code(2),
                    ..Plan::default()
                },
            },
            Case {
                name: "latencies add up and a later terminal still applies",
                rules: vec![
                    FaultRule::new("*", FaultEffect::LatencyMs(100)),
                    FaultRule::new("slow-*", FaultEffect::LatencyMs(400)),
                    FaultRule::new("*", FaultEffect::Http500),
                ],
                room: "slow-1",
                users: &["u"],
                roll: 0.0,
                want: Plan {
                    latency: Duration::from_millis(500),
                    terminal: Some(Terminal::Http500),
                    ..Plan::default()
                },
            },
            Case {
                name: "first terminal wins",
                rules: vec![
                    FaultRule::new("*", FaultEffect::Reset),
                    FaultRule::new("*", FaultEffect::Hang),
                ],
                room: "r",
                users: &["u"],
                roll: 0.0,
                want: Plan {
                    terminal: Some(Terminal::Reset),
                    ..Plan::default()
                },
            },
            Case {
                name: "probability fires below",
                rules: vec![with(FaultRule::new("*", FaultEffect::Code(1)), None, Some(0.1))],
                room: "r",
                users: &["u"],
                roll: 0.05,
                want: Plan {
                    terminal: code(1),
                    ..Plan::default()
                },
            },
            Case {
                name: "probability skips at or above",
                rules: vec![with(FaultRule::new("*", FaultEffect::Code(1)), None, Some(0.1))],
                room: "r",
                users: &["u"],
                roll: 0.1,
                want: Plan::default(),
            },
            Case {
                name: "absent user named",
                rules: vec![FaultRule::new("*", FaultEffect::AbsentUsers("ghost-*".into()))],
                room: "r",
                users: &["u", "ghost-1"],
                roll: 0.0,
                want: Plan {
                    absent: true,
                    ..Plan::default()
                },
            },
            Case {
                name: "absent user not named",
                rules: vec![FaultRule::new("*", FaultEffect::AbsentUsers("ghost-*".into()))],
                room: "r",
                users: &["u", "host-1"],
                roll: 0.0,
                want: Plan::default(),
            },
            Case {
                name: "terminal wins over absent",
                rules: vec![
                    FaultRule::new("*", FaultEffect::AbsentUsers("*".into())),
                    FaultRule::new("*", FaultEffect::Hang),
                ],
                room: "r",
                users: &["u"],
                roll: 0.0,
                want: Plan {
                    terminal: Some(Terminal::Hang),
                    absent: true,
                    ..Plan::default()
                },
            },
            Case {
                name: "long request id is not terminal; the first length wins",
                rules: vec![
                    FaultRule::new("long-*", FaultEffect::RequestIdBytes(4096)),
                    FaultRule::new("*", FaultEffect::RequestIdBytes(10)),
                    FaultRule::new("*", FaultEffect::Code(3)),
                ],
                room: "long-1",
                users: &["u"],
                roll: 0.0,
                want: Plan {
                    terminal: code(3),
                    request_id_bytes: Some(4096),
                    ..Plan::default()
                },
            },
        ];
        for case in cases {
            let mut matched = vec![0; case.rules.len()];
            let got = plan(&case.rules, &mut matched, case.room, &users(case.users), &mut || {
                case.roll
            });
            assert_eq!(got, case.want, "{}", case.name);
        }
    }

    #[test]
    fn first_n_counts_matching_calls_only() {
        let rules = vec![with_first(FaultRule::new("flaky-*", FaultEffect::Code(1)), 3)];
        let mut matched = vec![0];
        let mut outcomes = Vec::new();
        for room in ["flaky-1", "other", "flaky-2", "flaky-1", "other", "flaky-3", "flaky-1"] {
            let p = plan(&rules, &mut matched, room, &users(&["u"]), &mut || 0.0);
            outcomes.push(p.terminal);
        }
        let one = Some(Terminal::Code(1));
        assert_eq!(outcomes, [one, None, one, one, None, None, None]);
        assert_eq!(matched, [5]);
    }

    #[test]
    fn terminal_stops_counting_later_rules() {
        let rules = vec![
            FaultRule::new("*", FaultEffect::Code(1)),
            with_first(FaultRule::new("*", FaultEffect::Code(2)), 1),
        ];
        let mut matched = vec![0, 0];
        plan(&rules, &mut matched, "r", &users(&["u"]), &mut || 0.0);
        assert_eq!(matched, [1, 0]);
    }

    fn with_first(mut r: FaultRule, n: u64) -> FaultRule {
        r.first = Some(n);
        r
    }

    #[test]
    fn json_shape_and_validation() {
        let rules: Vec<FaultRule> = serde_json::from_str(
            r#"[{"room":"bad-*","effect":{"code":2}},
                {"effect":"http500","probability":0.5},
                {"room":"slow-*","effect":{"latency_ms":500}},
                {"effect":{"absent_users":"ghost-*"},"first":2},
                {"room":"long-*","effect":{"request_id_bytes":4096}}]"#,
        )
        .unwrap();
        assert_eq!(rules[0], FaultRule::new("bad-*", FaultEffect::Code(2)));
        assert_eq!(rules[1].room, "*");
        assert_eq!(rules[1].probability, Some(0.5));
        assert_eq!(rules[2].effect, FaultEffect::LatencyMs(500));
        assert_eq!(rules[3].first, Some(2));
        assert_eq!(rules[4].effect, FaultEffect::RequestIdBytes(4096));
        let back: Vec<FaultRule> = serde_json::from_str(&serde_json::to_string(&rules).unwrap()).unwrap();
        assert_eq!(back, rules);
        assert!(serde_json::from_str::<FaultRule>(r#"{"effect":"hang","typo":1}"#).is_err());
        let mut r = FaultRule::new("*", FaultEffect::Hang);
        r.probability = Some(1.5);
        assert!(r.validate().unwrap_err().contains("probability"));
        r.probability = Some(1.0);
        assert!(r.validate().is_ok());
    }
}
