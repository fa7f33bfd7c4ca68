//! A history question in the operator's words, shared by `kickq history` and the console's history page: the row
//! limits, `--since` (a time or an age), and a query described as text.

use super::HistoryQuery;
use crate::config::parse_duration;
use chrono::{DateTime, SecondsFormat, Utc};

/// Rows shown when `--limit` is not given.
pub(crate) const DEFAULT_LIMIT: i64 = 50;

/// Largest `--limit`: a bound on one read of the ledger.
pub(crate) const MAX_LIMIT: i64 = 100_000;

/// `--since`: RFC 3339, or an age counted back from now.
pub(crate) fn parse_since(raw: &str) -> Result<DateTime<Utc>, String> {
    since_at(raw, Utc::now())
}

/// [`parse_since`] with `now` given, so it can be tested.
pub(crate) fn since_at(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw.trim()) {
        return Ok(t.with_timezone(&Utc));
    }
    let age =
        parse_duration(raw).map_err(|_| format!("{raw:?} is neither an RFC 3339 time nor an age like 2h or 7d"))?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| now.checked_sub_signed(age))
        .ok_or_else(|| format!("{raw:?} reaches too far back"))
}

/// What a history query looks for, in words: `room "r", user "u"`.
pub(crate) fn describe(q: &HistoryQuery) -> String {
    let mut parts = Vec::new();
    for (what, v) in [("room", &q.room_id), ("user", &q.user_id), ("job", &q.job_id)] {
        if let Some(v) = v {
            parts.push(format!("{what} {v:?}"));
        }
    }
    if let Some(t) = q.since {
        parts.push(format!("since {}", t.to_rfc3339_opts(SecondsFormat::Secs, true)));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn since_takes_rfc3339_or_an_age() {
        let now = Utc.with_ymd_and_hms(2024, 5, 8, 0, 0, 0).unwrap();
        assert_eq!(
            since_at("7d", now).unwrap(),
            Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()
        );
        assert_eq!(
            since_at("2h", now).unwrap(),
            Utc.with_ymd_and_hms(2024, 5, 7, 22, 0, 0).unwrap()
        );
        assert_eq!(
            since_at("2024-05-01T14:00:00+02:00", now).unwrap(),
            Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
        );
        assert!(since_at("yesterday", now).unwrap_err().contains("RFC 3339"));
        assert!(since_at("999999999999d", now).is_err());
    }
}
