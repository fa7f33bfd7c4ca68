//! The properties a letter is republished with: replayed to a job queue (dead-letter state moved into
//! `kickq-dlq-history`, attempts reset) or re-appended to the dead queue (unchanged but for broker bookkeeping).

use crate::amqp::headers::{self, DLQ_HISTORY};
use chrono::{DateTime, Utc};
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use lapin::BasicProperties;
use std::collections::BTreeMap;

/// kickq headers that describe one death or one retry budget: a replay starts
/// afresh, so they go (into the history entry, for the first four).
const DEATH_STATE: &[&str] = &[
    headers::ERROR,
    headers::CODE,
    headers::DETAIL,
    headers::ATTEMPTS,
    headers::FAILED_AT,
    headers::FIRST_ATTEMPT_AT,
    headers::LAST_CODE,
    headers::HALTED,
];

/// The properties of a replay: the original's, with every `x-` header (broker
/// bookkeeping such as `x-death` and `x-delivery-count`, which would make the
/// worker treat the message as a redelivery) and the death state removed, and
/// an entry appended to `kickq-dlq-history` (earlier entries kept): replayed-at
/// and the letter's error, code, detail, attempts and failed-at.
pub(crate) fn replay_properties(orig: &BasicProperties, now: DateTime<Utc>) -> BasicProperties {
    let h = orig.headers().as_ref();
    let dl = headers::read_dead_letter(h);
    let mut entry = FieldTable::default();
    put_str(&mut entry, "replayed-at", &headers::rfc3339(now));
    put_str(&mut entry, headers::ERROR, dl.error.as_str());
    if let Some(code) = dl.code {
        entry.insert(headers::CODE.into(), AMQPValue::LongLongInt(code));
    }
    put_str(&mut entry, headers::DETAIL, &dl.detail);
    entry.insert(headers::ATTEMPTS.into(), AMQPValue::LongLongInt(dl.attempts.into()));
    if let Some(at) = headers::get_str(h, headers::FAILED_AT) {
        put_str(&mut entry, headers::FAILED_AT, &at);
    }
    let mut history: Vec<AMQPValue> = match h.and_then(|h| h.inner().get(DLQ_HISTORY)) {
        Some(AMQPValue::FieldArray(a)) => a.as_slice().to_vec(),
        // Not ours to judge: a foreign value is kept as the first entry.
        Some(other) => vec![other.clone()],
        None => Vec::new(),
    };
    history.push(AMQPValue::FieldTable(entry));
    let mut kept: BTreeMap<ShortString, AMQPValue> = h
        .map(|h| h.inner().clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|(k, _)| !k.as_str().starts_with("x-") && !DEATH_STATE.contains(&k.as_str()))
        .collect();
    kept.insert(DLQ_HISTORY.into(), AMQPValue::FieldArray(FieldArray::from(history)));
    headers::copy_properties(orig, FieldTable::from(kept))
}

pub(crate) use crate::amqp::headers::letter_reappend_properties;

fn put_str(t: &mut FieldTable, name: &str, value: &str) {
    t.insert(
        ShortString::from(name),
        AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::headers::{DeadError, DeadLetter};
    use crate::amqp::publish::persistent_json;
    use chrono::TimeZone;

    fn dead(history: Option<AMQPValue>) -> BasicProperties {
        let dl = DeadLetter {
            error: DeadError::RetriesExhausted,
            code: Some(1),
            detail: "busy".into(),
            attempts: 8,
            job_id: Some("j1".into()),
            failed_at: Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap(),
        };
        let mut h = headers::dead_letter(None, &dl);
        h.insert("trace-id".into(), AMQPValue::LongString("t".into()));
        h.insert("x-delivery-count".into(), AMQPValue::LongLongInt(3));
        h.insert("x-first-death-reason".into(), AMQPValue::LongString("rejected".into()));
        h.insert(headers::FIRST_ATTEMPT_AT.into(), AMQPValue::LongString("x".into()));
        if let Some(v) = history {
            h.insert(DLQ_HISTORY.into(), v);
        }
        persistent_json(Some("j1"), h)
            .with_expiration("1000".into())
            .with_user_id("someone".into())
    }

    fn history(p: &BasicProperties) -> Vec<FieldTable> {
        match p.headers().as_ref().unwrap().inner().get(DLQ_HISTORY) {
            Some(AMQPValue::FieldArray(a)) => a
                .as_slice()
                .iter()
                .map(|v| match v {
                    AMQPValue::FieldTable(t) => t.clone(),
                    other => panic!("entry {other:?}"),
                })
                .collect(),
            other => panic!("history {other:?}"),
        }
    }

    #[test]
    fn a_replay_resets_the_death_and_records_it() {
        let now = Utc.with_ymd_and_hms(2024, 5, 2, 0, 0, 0).unwrap();
        let p = replay_properties(&dead(None), now);
        let h = p.headers().as_ref();
        let names: Vec<&str> = h.unwrap().inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, vec![headers::DLQ_HISTORY, headers::JOB_ID, "trace-id"]);
        assert_eq!(headers::get_i64(h, headers::ATTEMPTS), None, "attempts reset");
        let entries = history(&p);
        assert_eq!(entries.len(), 1);
        let e = Some(&entries[0]);
        assert_eq!(
            headers::get_str(e, "replayed-at").as_deref(),
            Some("2024-05-02T00:00:00.000Z")
        );
        assert_eq!(
            headers::get_str(e, headers::ERROR).as_deref(),
            Some("retries_exhausted")
        );
        assert_eq!(headers::get_i64(e, headers::CODE), Some(1));
        assert_eq!(headers::get_str(e, headers::DETAIL).as_deref(), Some("busy"));
        assert_eq!(headers::get_i64(e, headers::ATTEMPTS), Some(8));
        assert_eq!(
            headers::get_str(e, headers::FAILED_AT).as_deref(),
            Some("2024-05-01T12:00:00.000Z")
        );
        assert_eq!(p.message_id().as_ref().map(|m| m.as_str()), Some("j1"));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(*p.expiration(), None);
        assert_eq!(*p.user_id(), None);
    }

    #[test]
    fn a_second_replay_keeps_the_first_entry() {
        let now = Utc::now();
        let once = replay_properties(&dead(None), now);
        let mut h = once.headers().clone().unwrap();
        // Dead again: the worker adds a fresh death on top of the history.
        h.insert(headers::ERROR.into(), AMQPValue::LongString("permanent".into()));
        let twice = replay_properties(&once.clone().with_headers(h), now);
        let entries = history(&twice);
        assert_eq!(entries.len(), 2);
        assert_eq!(
            headers::get_str(Some(&entries[1]), headers::ERROR).as_deref(),
            Some("permanent")
        );
        let foreign = replay_properties(&dead(Some(AMQPValue::LongString("old".into()))), now);
        assert_eq!(
            match foreign.headers().as_ref().unwrap().inner().get(DLQ_HISTORY) {
                Some(AMQPValue::FieldArray(a)) => a.as_slice().len(),
                _ => 0,
            },
            2
        );
    }

    #[test]
    fn a_reappend_only_drops_the_delivery_count_and_the_priority() {
        let orig = dead(None).with_priority(7);
        let p = letter_reappend_properties(&orig);
        let mut want = orig.headers().clone().unwrap().inner().clone();
        want.remove("x-delivery-count");
        assert_eq!(p.headers().as_ref().unwrap().inner(), &want);
        assert_eq!(p.message_id(), orig.message_id());
        assert_eq!(p.content_type(), orig.content_type());
        assert_eq!(p.priority(), &None, "a re-appended letter keeps no priority");
        assert_eq!(p.delivery_mode(), &Some(2));
        // A job forwarded to its shard keeps its producer's priority.
        assert_eq!(crate::amqp::headers::forward_properties(&orig).priority(), &Some(7));
    }
}
