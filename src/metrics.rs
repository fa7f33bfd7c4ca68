//! Every metric kickq exports, its name, labels and buckets, in one place; stages call these functions and
//! never name a metric themselves.
//!
//! Label values are bounded sets (dispositions, error kinds, API codes from a
//! fixed table plus "other", the configured AppIds), so no label can grow
//! without limit, and no label ever carries a user id, room id, URL or secret.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// Messages taken from the requests queue, by `result` (`valid`, `invalid`).
pub const MESSAGES_CONSUMED: &str = "kickq_messages_consumed_total";
/// Users by `app` and final `outcome` of this round (`kicked`, `nothing_to_do`,
/// `dead_lettered`, `retry_scheduled`, `deferred`, `skipped`).
pub const USERS: &str = "kickq_users_total";
/// API calls by `app`, `disposition` and `code` (`transport` when none).
pub const API_CALLS: &str = "kickq_api_calls_total";
/// Calls cut by the coalescer, by `why` (`full`, `largest`, `overdue`).
pub const COALESCED: &str = "kickq_coalesced_calls_total";
/// Seconds from sending a call to its answer.
pub const CALL_LATENCY: &str = "kickq_api_call_duration_seconds";
/// Users carried per call.
pub const USERS_PER_CALL: &str = "kickq_users_per_call";
/// Milliseconds pending work waited for a token, summed (a counter holds
/// whole numbers, and milliseconds keep the waits that matter visible).
pub const TOKEN_WAIT: &str = "kickq_token_wait_milliseconds_total";
/// Users waiting in the coalescer.
pub const PENDING_USERS: &str = "kickq_pending_users";
/// Groups waiting in the coalescer.
pub const PENDING_GROUPS: &str = "kickq_pending_groups";
/// Calls started and not yet answered.
pub const CALLS_IN_FLIGHT: &str = "kickq_calls_in_flight";
/// Dead letters published, by `error`.
pub const DEAD_LETTERS: &str = "kickq_dead_letters_total";
/// Retry messages published, by `kind` (`transient`, `rate_limited`, `unknown_code`, `halted`).
pub const RETRIES: &str = "kickq_retries_total";
/// AppIds currently halted (credentials, clock or configuration).
pub const HALTED_APPS: &str = "kickq_halted_apps";
/// Messages in a queue of the worker's shards, by `queue` and `state`
/// (`ready`), read by a passive declare every few seconds while active.
pub const QUEUE_MESSAGES: &str = "kickq_queue_messages";
/// Each served app's configured calls per second, by `app` (the line to draw
/// `rate(kickq_api_calls_total)` against).
pub const APP_RATE_LIMIT: &str = "kickq_app_rate_limit";
/// 1 while the app is halted, by `app`; 0 otherwise.
pub const APP_HALTED: &str = "kickq_app_halted";
/// Deliveries the broker marked as redelivered.
pub const REDELIVERIES: &str = "kickq_redeliveries_total";
/// Acks that did not land, by `kind` (`stale`: the message will come again; `error`).
pub const ACK_FAILURES: &str = "kickq_ack_failures_total";
/// Reconnect attempts after a lost or failed broker session.
pub const RECONNECTS: &str = "kickq_broker_reconnects_total";
/// Ledger batch writes, by `result` (`ok`, `error`).
pub const LEDGER_WRITES: &str = "kickq_ledger_writes_total";
/// 1 while this process holds its namespace's leadership lock (active), 0 while standby.
pub const ACTIVE: &str = "kickq_active";
/// Jobs forwarded to the shard that serves their app, by that shard.
pub const FORWARDED: &str = "kickq_forwarded_total";
/// Times this process took the leadership lock, by `reason` of the first
/// call's hold (`no_record`, `released`, `crashed`).
pub const TAKEOVERS: &str = "kickq_leader_takeovers_total";
/// Always 1, labelled with the build's `version` and `git_sha`, so a
/// dashboard can tell which build each worker runs.
pub const BUILD_INFO: &str = "kickq_build_info";

/// Label values of `kickq_users_total`'s `outcome`.
const USER_OUTCOMES: &[&str] = &[
    "kicked",
    "nothing_to_do",
    "dead_lettered",
    "retry_scheduled",
    "deferred",
    "skipped",
];
/// Label values of `kickq_retries_total`'s `kind`.
const RETRY_KINDS: &[&str] = &["transient", "rate_limited", "unknown_code", "halted"];
/// Label values of `kickq_coalesced_calls_total`'s `why`.
const COALESCE_REASONS: &[&str] = &["full", "largest", "overdue"];
/// Label values of `kickq_ack_failures_total`'s `kind`.
const ACK_FAILURE_KINDS: &[&str] = &["stale", "error"];
/// Label values of the `result` of consumed messages and of ledger writes.
const MESSAGE_RESULTS: &[&str] = &["valid", "invalid"];
const LEDGER_RESULTS: &[&str] = &["ok", "error"];

/// Installs the Prometheus recorder for this process (once; later calls
/// return the same handle, so several workers in one test process share it)
/// and returns the handle that renders `/metrics`.
pub fn install() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(CALL_LATENCY.into()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    ],
                )
                .expect("bucket list is non-empty")
                .set_buckets_for_metric(Matcher::Full(USERS_PER_CALL.into()), &[1.0, 2.0, 3.0, 4.0, 5.0])
                .expect("bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first (an embedding
            // application's); then ours renders nothing new, which is honest.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            register_all();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(MESSAGES_CONSUMED, "Messages taken from the requests queue");
    describe_counter!(USERS, "Users by outcome of this round");
    describe_counter!(COALESCED, "Calls cut by the coalescer, by reason");
    describe_counter!(API_CALLS, "KickoutUser calls by disposition and code");
    describe_histogram!(CALL_LATENCY, Unit::Seconds, "KickoutUser call latency");
    describe_histogram!(USERS_PER_CALL, "Users per KickoutUser call");
    describe_counter!(
        TOKEN_WAIT,
        Unit::Milliseconds,
        "Time pending work waited for rate tokens"
    );
    describe_gauge!(PENDING_USERS, "Users waiting in the coalescer");
    describe_gauge!(PENDING_GROUPS, "Groups waiting in the coalescer");
    describe_gauge!(CALLS_IN_FLIGHT, "Calls started and not yet answered");
    describe_counter!(DEAD_LETTERS, "Dead letters published by error");
    describe_counter!(RETRIES, "Retry messages published by kind");
    describe_gauge!(
        HALTED_APPS,
        "AppIds halted by a credential, clock or configuration code"
    );
    describe_counter!(REDELIVERIES, "Deliveries marked redelivered by the broker");
    describe_counter!(ACK_FAILURES, "Acks that did not land");
    describe_counter!(RECONNECTS, "Reconnect attempts after a lost or failed broker session");
    describe_counter!(LEDGER_WRITES, "Ledger batch writes");
    describe_gauge!(
        ACTIVE,
        "1 while this worker holds the shard's leadership lock, by shard"
    );
    describe_counter!(
        FORWARDED,
        "Jobs that reached a shard not serving their app, forwarded to the one that does, by that shard"
    );
    describe_counter!(TAKEOVERS, "Leadership lock takeovers by hold reason");
    describe_gauge!(
        QUEUE_MESSAGES,
        "Messages in each lane queue and the dead-letter queue, by queue and state (ready)"
    );
    describe_gauge!(BUILD_INFO, "1, labelled with the build's version and git commit");
}

/// Registers every counter at zero for each of its known label values, the
/// gauges at their idle values, and `kickq_build_info` at 1: a series that
/// appears only on its first event breaks `rate()` and `increase()` over that
/// event, and leaves a fresh worker's dashboard empty.
fn register_all() {
    use crate::amqp::headers::DeadError;
    use crate::leadership::HoldReason;
    for r in MESSAGE_RESULTS {
        counter!(MESSAGES_CONSUMED, "result" => *r).increment(0);
    }
    for w in COALESCE_REASONS {
        counter!(COALESCED, "why" => *w).increment(0);
    }
    counter!(TOKEN_WAIT).increment(0);
    for e in [
        DeadError::Validation,
        DeadError::Permanent,
        DeadError::RetriesExhausted,
        DeadError::UnknownApp,
    ] {
        counter!(DEAD_LETTERS, "error" => e.as_str()).increment(0);
    }
    for k in RETRY_KINDS {
        counter!(RETRIES, "kind" => *k).increment(0);
    }
    counter!(REDELIVERIES).increment(0);
    for k in ACK_FAILURE_KINDS {
        counter!(ACK_FAILURES, "kind" => *k).increment(0);
    }
    counter!(RECONNECTS).increment(0);
    for r in LEDGER_RESULTS {
        counter!(LEDGER_WRITES, "result" => *r).increment(0);
    }
    for r in [HoldReason::NoRecord, HoldReason::Released, HoldReason::Crashed] {
        counter!(TAKEOVERS, "reason" => r.as_str()).increment(0);
    }
    gauge!(PENDING_USERS).increment(0.0);
    gauge!(PENDING_GROUPS).increment(0.0);
    gauge!(CALLS_IN_FLIGHT).increment(0.0);
    gauge!(HALTED_APPS).increment(0.0);
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION"), "git_sha" => crate::GIT_SHA).set(1.0);
}

/// Known API codes keep their own label value; anything else is "other", so
/// a misbehaving gateway cannot explode the label set.
pub fn code_label(code: Option<i64>) -> String {
    match code {
        None => "transport".into(),
        Some(c) if crate::zego::codes::describe(c) != "unknown code" => c.to_string(),
        Some(_) => "other".into(),
    }
}

/// The span `/status`'s calls per second averages over: long enough to
/// smooth bursts, short enough to show a halt or a stall within a minute.
pub const CALL_RATE_WINDOW: Duration = Duration::from_secs(60);

/// Events counted in one-second buckets over the last `N` seconds (a
/// worker's call rate and call series, `health::live`): pure (the caller says which second it is),
/// fixed memory.
#[derive(Debug, Clone)]
pub struct SecondBuckets<const N: usize> {
    /// `(second, count)`, indexed by `second % N`.
    buckets: [(u64, u64); N],
}

impl<const N: usize> SecondBuckets<N> {
    /// No events.
    pub const fn new() -> Self {
        Self {
            buckets: [(u64::MAX, 0); N],
        }
    }

    /// One event in second `sec`.
    pub fn record(&mut self, sec: u64) {
        let b = &mut self.buckets[sec as usize % N];
        if b.0 != sec {
            *b = (sec, 0);
        }
        b.1 += 1;
    }

    /// Events in the window that ends with second `now` (that second included).
    pub fn count(&self, now: u64) -> u64 {
        self.buckets
            .iter()
            .filter(|(s, _)| *s <= now && now - *s < N as u64)
            .map(|(_, n)| n)
            .sum()
    }

    /// Events of each second of the window that ends with second `now`,
    /// oldest first (`N` values; a second with none, or before the first
    /// event, is 0).
    pub fn series(&self, now: u64) -> Vec<u64> {
        (0..N as u64)
            .map(|back| {
                let sec = now.checked_sub(N as u64 - 1 - back);
                sec.map_or(0, |sec| match self.buckets[sec as usize % N] {
                    (s, n) if s == sec => n,
                    _ => 0,
                })
            })
            .collect()
    }
}

impl<const N: usize> Default for SecondBuckets<N> {
    fn default() -> Self {
        Self::new()
    }
}

/// How far back the console's calls-per-second line reaches: five minutes
/// show a sweep's start, a halt and a slow-down together, in 300 points.
pub const CALL_SERIES_WINDOW: Duration = Duration::from_secs(300);

/// Registers an app's series at zero (users by outcome, calls by every known
/// code) and its rate gauge: called for each configured app at start.
pub fn register_app(app_id: u32, rate: u32) {
    let app = app_label(app_id);
    for o in USER_OUTCOMES {
        counter!(USERS, "app" => app.clone(), "outcome" => *o).increment(0);
    }
    // Each known code with the disposition it gets for one user and for
    // several, and transport failures (always retried).
    let transport = (crate::zego::codes::Disposition::Retry(crate::zego::codes::RetryKind::Transient)).as_str();
    counter!(API_CALLS, "app" => app.clone(), "disposition" => transport, "code" => code_label(None)).increment(0);
    for code in crate::zego::codes::known_codes() {
        for users in [1, 2] {
            let d = (crate::zego::codes::classify_code(code, users)).as_str();
            counter!(API_CALLS, "app" => app.clone(), "disposition" => d, "code" => code_label(Some(code)))
                .increment(0);
        }
    }
    gauge!(APP_RATE_LIMIT, "app" => app.clone()).set(f64::from(rate));
    gauge!(APP_HALTED, "app" => app).set(0.0);
}

/// The `app` label of an AppId.
fn app_label(app_id: u32) -> String {
    app_id.to_string()
}

/// An app was halted (`true`) or resumed.
pub fn app_halted(app_id: u32, halted: bool) {
    gauge!(APP_HALTED, "app" => app_label(app_id)).set(if halted { 1.0 } else { 0.0 });
}

/// A message was consumed.
pub fn message_consumed(valid: bool) {
    counter!(MESSAGES_CONSUMED, "result" => if valid { "valid" } else { "invalid" }).increment(1);
}

/// `n` users reached `outcome`.
pub fn users(app_id: u32, outcome: &'static str, n: u64) {
    counter!(USERS, "app" => app_label(app_id), "outcome" => outcome).increment(n);
}

/// One API call was answered (or failed in transport).
pub fn api_call(app_id: u32, disposition: &'static str, code: Option<i64>, latency: Duration, users: usize) {
    counter!(API_CALLS, "app" => app_label(app_id), "disposition" => disposition, "code" => code_label(code))
        .increment(1);
    histogram!(CALL_LATENCY).record(latency.as_secs_f64());
    histogram!(USERS_PER_CALL).record(users as f64);
}

/// The coalescer cut a call of `users` users for this reason (`full`,
/// `largest` or `overdue`).
pub fn coalesced(why: &'static str, users: usize) {
    counter!(COALESCED, "why" => why).increment(1);
    tracing::trace!(why, users, "call cut");
}

/// Pending work waited this long for a token.
pub fn token_wait(waited: Duration) {
    counter!(TOKEN_WAIT).increment(waited.as_millis() as u64);
}

/// The coalescer's backlog.
pub fn pending(users: usize, groups: usize) {
    gauge!(PENDING_USERS).set(users as f64);
    gauge!(PENDING_GROUPS).set(groups as f64);
}

/// Calls in flight changed by `delta`.
pub fn calls_in_flight(delta: f64) {
    gauge!(CALLS_IN_FLIGHT).increment(delta);
}

/// A dead letter was published.
pub fn dead_letter(error: &'static str) {
    counter!(DEAD_LETTERS, "error" => error).increment(1);
}

/// A retry message was published.
pub fn retry(kind: &'static str) {
    counter!(RETRIES, "kind" => kind).increment(1);
}

/// The number of halted AppIds.
pub fn halted_apps(n: usize) {
    gauge!(HALTED_APPS).set(n as f64);
}

/// Messages ready in `queue`, as a passive declare just saw them.
pub fn queue_ready(queue: &str, n: u32) {
    gauge!(QUEUE_MESSAGES, "queue" => queue.to_owned(), "state" => "ready").set(f64::from(n));
}

/// Messages of `queue` this worker holds unacked now (taken, not yet
/// finished): with one active worker per shard, the queue's unacked depth.
pub fn queue_unacked(queue: &str, n: u64) {
    gauge!(QUEUE_MESSAGES, "queue" => queue.to_owned(), "state" => "unacked").set(n as f64);
}

/// A redelivered message arrived.
pub fn redelivery() {
    counter!(REDELIVERIES).increment(1);
}

/// An ack did not land.
pub fn ack_failure(kind: &'static str) {
    counter!(ACK_FAILURES, "kind" => kind).increment(1);
}

/// A new broker session started after a lost one.
pub fn reconnect() {
    counter!(RECONNECTS).increment(1);
}

/// A ledger batch write finished.
pub fn ledger_write(ok: bool) {
    counter!(LEDGER_WRITES, "result" => if ok { "ok" } else { "error" }).increment(1);
}

/// This process became active (true) or standby (false) for `shard`.
pub fn active(shard: &str, on: bool) {
    gauge!(ACTIVE, "shard" => shard.to_owned()).set(if on { 1.0 } else { 0.0 });
}

/// A served shard's series exist from the start (standby until its lock).
pub fn register_shard(shard: &str) {
    gauge!(ACTIVE, "shard" => shard.to_owned()).set(0.0);
}

/// The forward counter of a shard of the deployment exists from the start.
pub fn register_forwarded(shard: &str) {
    counter!(FORWARDED, "shard" => shard.to_owned()).increment(0);
}

/// A job was forwarded to `shard`'s queue.
pub fn forwarded(shard: &str) {
    counter!(FORWARDED, "shard" => shard.to_owned()).increment(1);
}

/// This process took the leadership lock.
pub fn takeover(reason: &'static str) {
    counter!(TAKEOVERS, "reason" => reason).increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_and_the_build_info_render_from_the_start() {
        let handle = install();
        // The worker registers each configured app at start.
        register_app(1234567890, 50);
        register_shard("default");
        register_forwarded("default");
        let rendered = handle.render();
        let series: Vec<&str> = rendered.lines().filter(|l| !l.starts_with('#')).collect();
        for name in [
            MESSAGES_CONSUMED,
            USERS,
            API_CALLS,
            COALESCED,
            TOKEN_WAIT,
            DEAD_LETTERS,
            RETRIES,
            REDELIVERIES,
            ACK_FAILURES,
            RECONNECTS,
            LEDGER_WRITES,
            TAKEOVERS,
            PENDING_USERS,
            PENDING_GROUPS,
            CALLS_IN_FLIGHT,
            HALTED_APPS,
            ACTIVE,
            APP_RATE_LIMIT,
            APP_HALTED,
            FORWARDED,
        ] {
            assert!(
                series
                    .iter()
                    .any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
                "{name} is not rendered at start:\n{rendered}"
            );
        }
        for (name, label) in [
            (USERS, "outcome=\"skipped\""),
            (USERS, "app=\"1234567890\""),
            (APP_RATE_LIMIT, "app=\"1234567890\""),
            (API_CALLS, "code=\"transport\""),
            (API_CALLS, "code=\"100000004\""),
            (TAKEOVERS, "reason=\"crashed\""),
        ] {
            assert!(
                series.iter().any(|l| l.starts_with(name) && l.contains(label)),
                "{name}{{{label}}} is not rendered:\n{rendered}"
            );
        }
        let info = format!(
            "{BUILD_INFO}{{version=\"{}\",git_sha=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION"),
            crate::GIT_SHA
        );
        assert!(series.contains(&info.as_str()), "{info} not in:\n{rendered}");
    }

    #[test]
    fn second_buckets_count_the_last_minute() {
        // (events at these seconds, now, expected count)
        let table: &[(&[u64], u64, u64)] = &[
            (&[], 0, 0),
            (&[0], 0, 1),
            (&[0, 0, 1], 1, 3),
            (&[0], 59, 1),
            (&[0], 60, 0),
            (&[0, 30, 61], 61, 2),
            (&[0, 60], 60, 1),
            (&[5, 125], 125, 1),
            (&[100], 99, 0),
        ];
        for &(events, now, want) in table {
            let mut b = SecondBuckets::<60>::new();
            for &e in events {
                b.record(e);
            }
            assert_eq!(b.count(now), want, "events {events:?} at {now}");
        }
    }

    #[test]
    fn second_buckets_give_a_series_oldest_first() {
        // (events at these seconds, now, expected series of a 4-second window)
        let table: &[(&[u64], u64, [u64; 4])] = &[
            (&[], 10, [0, 0, 0, 0]),
            (&[10], 10, [0, 0, 0, 1]),
            (&[7, 8, 8, 10], 10, [1, 2, 0, 1]),
            (&[3, 7], 10, [1, 0, 0, 0]),
            (&[1], 2, [0, 0, 1, 0]),
            (&[2, 6], 6, [0, 0, 0, 1]),
        ];
        for &(events, now, want) in table {
            let mut b = SecondBuckets::<4>::new();
            for &e in events {
                b.record(e);
            }
            assert_eq!(b.series(now), want.to_vec(), "events {events:?} at {now}");
        }
    }
}
