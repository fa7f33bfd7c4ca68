//! The one-line text form of a fault rule used by `kickq mock-zego --fault`, parsed into a `FaultRule`.
//!
//! Syntax: comma-separated items, each `key=value` or a bare flag, with
//! exactly one effect:
//!
//! ```text
//! room=GLOB          rooms the rule applies to (default *; * matches any run)
//! code=N             answer return code N             room=bad-*,code=2
//! http500            answer HTTP 500 with HTML        room=*,http500
//! latency=DURATION   delay the answer (500ms, 2s)     room=slow-*,latency=500ms
//! hang               never answer                     room=hang-*,hang
//! reset              drop the connection              room=reset-*,reset
//! users=GLOB,absent  those users are not in the room  users=ghost-*,absent
//! request_id_bytes=N answer as usual, RequestId N bytes  room=long-*,request_id_bytes=4096
//! first=N            only the first N matching calls  room=flaky-*,code=1,first=3
//! error-rate=P       fire with probability P (0..=1)  room=*,error-rate=0.1,code=1
//! ```
//!
//! Globs cannot hold a comma or `=`.

use super::faults::{FaultEffect, FaultRule};
use crate::config::parse_duration;

/// A `--fault` value that does not parse. `Display` quotes the text and says
/// what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fault {text:?}: {why}")]
pub struct FaultSyntaxError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

/// Parses one rule; see the module documentation for the syntax.
pub fn parse_fault(text: &str) -> Result<FaultRule, FaultSyntaxError> {
    let fail = |why: String| FaultSyntaxError {
        text: text.to_owned(),
        why,
    };
    let mut room = None;
    let mut users = None;
    let mut first = None;
    let mut probability = None;
    let mut effects: Vec<FaultEffect> = Vec::new();
    let mut absent = false;
    for item in text.split(',').map(str::trim) {
        let (key, value) = match item.split_once('=') {
            Some((k, v)) => (k.trim(), Some(v.trim())),
            None => (item, None),
        };
        match (key, value) {
            ("room", Some(v)) => set_once(&mut room, v.to_owned(), "room").map_err(fail)?,
            ("users", Some(v)) => set_once(&mut users, v.to_owned(), "users").map_err(fail)?,
            ("code", Some(v)) => {
                let code = v.parse().map_err(|_| fail(format!("code {v:?} is not an integer")))?;
                effects.push(FaultEffect::Code(code));
            }
            ("first", Some(v)) => {
                let n = v.parse().map_err(|_| fail(format!("first {v:?} is not a count")))?;
                set_once(&mut first, n, "first").map_err(fail)?;
            }
            ("error-rate", Some(v)) => {
                let p: f64 = v
                    .parse()
                    .map_err(|_| fail(format!("error-rate {v:?} is not a number")))?;
                if !(0.0..=1.0).contains(&p) {
                    return Err(fail(format!("error-rate {v} is not within 0..=1")));
                }
                set_once(&mut probability, p, "error-rate").map_err(fail)?;
            }
            ("latency", Some(v)) => {
                let d = parse_duration(v).map_err(fail)?;
                let ms = u64::try_from(d.as_millis()).map_err(|_| fail(format!("latency {v} is too long")))?;
                effects.push(FaultEffect::LatencyMs(ms));
            }
            ("request_id_bytes", Some(v)) => {
                let n = v
                    .parse()
                    .map_err(|_| fail(format!("request_id_bytes {v:?} is not a byte count")))?;
                effects.push(FaultEffect::RequestIdBytes(n));
            }
            ("http500", None) => effects.push(FaultEffect::Http500),
            ("hang", None) => effects.push(FaultEffect::Hang),
            ("reset", None) => effects.push(FaultEffect::Reset),
            ("absent", None) => absent = true,
            ("", None) => return Err(fail("empty item".into())),
            (k, _) => return Err(fail(format!("unknown item {k:?}"))),
        }
    }
    match (absent, users) {
        (true, Some(pattern)) => effects.push(FaultEffect::AbsentUsers(pattern)),
        (true, None) => return Err(fail("absent needs users=GLOB".into())),
        (false, Some(_)) => return Err(fail("users=GLOB is only meaningful with absent".into())),
        (false, None) => {}
    }
    let effect = match effects.len() {
        1 => effects.remove(0),
        0 => {
            return Err(fail(
                "no effect (code=N, http500, latency=D, hang, reset, absent or request_id_bytes=N)".into(),
            ))
        }
        _ => return Err(fail("more than one effect; use one --fault per effect".into())),
    };
    Ok(FaultRule {
        room: room.unwrap_or_else(|| "*".into()),
        first,
        probability,
        effect,
    })
}

fn set_once<T>(slot: &mut Option<T>, value: T, name: &str) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("{name} given twice"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(room: &str, first: Option<u64>, probability: Option<f64>, effect: FaultEffect) -> FaultRule {
        FaultRule {
            room: room.into(),
            first,
            probability,
            effect,
        }
    }

    #[test]
    fn accepted_table() {
        let table = vec![
            ("room=bad-*,code=2", rule("bad-*", None, None, FaultEffect::Code(2))),
            (
                "room=flaky-*,code=1,first=3",
                rule("flaky-*", Some(3), None, FaultEffect::Code(1)),
            ),
            (
                "room=slow-*,latency=500ms",
                rule("slow-*", None, None, FaultEffect::LatencyMs(500)),
            ),
            (
                "room=slow-*,latency=2s",
                rule("slow-*", None, None, FaultEffect::LatencyMs(2000)),
            ),
            ("room=*,http500", rule("*", None, None, FaultEffect::Http500)),
            ("room=hang-*,hang", rule("hang-*", None, None, FaultEffect::Hang)),
            ("room=reset-*,reset", rule("reset-*", None, None, FaultEffect::Reset)),
            (
                "room=*,error-rate=0.1,code=1",
                rule("*", None, Some(0.1), FaultEffect::Code(1)),
            ),
            (
                "users=ghost-*,absent",
                rule("*", None, None, FaultEffect::AbsentUsers("ghost-*".into())),
            ),
            ("code=5018", rule("*", None, None, FaultEffect::Code(5018))),
            (" room = r , code = -1 ", rule("r", None, None, FaultEffect::Code(-1))),
            ("reset,first=1,room=x", rule("x", Some(1), None, FaultEffect::Reset)),
            (
                "room=long-*,request_id_bytes=4096",
                rule("long-*", None, None, FaultEffect::RequestIdBytes(4096)),
            ),
        ];
        for (text, want) in table {
            assert_eq!(parse_fault(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn rejected_table() {
        let table = [
            ("", "empty item"),
            ("room=x", "no effect"),
            ("room=x,code=1,hang", "more than one effect"),
            ("code=abc", "not an integer"),
            ("code=1,first=-1", "not a count"),
            ("code=1,error-rate=2", "not within 0..=1"),
            ("code=1,error-rate=x", "not a number"),
            ("latency=5x", "unknown unit"),
            ("absent", "absent needs users=GLOB"),
            ("users=g*,code=1", "only meaningful with absent"),
            ("room=a,room=b,hang", "room given twice"),
            ("hang=1", "unknown item \"hang\""),
            ("explode", "unknown item"),
            ("code=1,,hang", "empty item"),
            ("request_id_bytes=-1", "not a byte count"),
            ("request_id_bytes=4k", "not a byte count"),
            ("request_id_bytes=1,code=2", "more than one effect"),
        ];
        for (text, why) in table {
            let err = parse_fault(text).expect_err(text).to_string();
            assert!(err.contains(why), "{text}: {err} should contain {why}");
        }
    }
}
