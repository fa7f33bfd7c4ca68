//! Every metric kickq exports, its name, labels and buckets, in one place; stages call these functions and
//! never name a metric themselves.
//!
//! Label values are bounded sets (dispositions, error kinds, API codes from a
//! fixed table plus "other"), so no label can grow without limit, and no label
//! ever carries a user id, room id, URL or secret.

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// Messages taken from the requests queue, by `result` (`valid`, `invalid`).
pub const MESSAGES_CONSUMED: &str = "kickq_messages_consumed_total";
/// Users by final `outcome` of this round (`kicked`, `nothing_to_do`,
/// `dead_lettered`, `retry_scheduled`, `deferred`, `skipped`).
pub const USERS: &str = "kickq_users_total";
/// API calls by `disposition` and `code` (`transport` when none).
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
/// Times this process took the leadership lock, by `reason` of the first
/// call's hold (`no_record`, `released`, `crashed`, `stale`).
pub const TAKEOVERS: &str = "kickq_leader_takeovers_total";

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
    describe_gauge!(ACTIVE, "1 while this worker holds the leadership lock");
    describe_counter!(TAKEOVERS, "Leadership lock takeovers by hold reason");
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

/// A message was consumed.
pub fn message_consumed(valid: bool) {
    counter!(MESSAGES_CONSUMED, "result" => if valid { "valid" } else { "invalid" }).increment(1);
}

/// `n` users reached `outcome`.
pub fn users(outcome: &'static str, n: u64) {
    counter!(USERS, "outcome" => outcome).increment(n);
}

/// One API call was answered (or failed in transport).
pub fn api_call(disposition: &'static str, code: Option<i64>, latency: Duration, users: usize) {
    counter!(API_CALLS, "disposition" => disposition, "code" => code_label(code)).increment(1);
    histogram!(CALL_LATENCY).record(latency.as_secs_f64());
    histogram!(USERS_PER_CALL).record(users as f64);
}

/// The coalescer cut a call of `users` users for this reason.
pub fn coalesced(why: crate::coalesce::Reason, users: usize) {
    let why = match why {
        crate::coalesce::Reason::Full => "full",
        crate::coalesce::Reason::Largest => "largest",
        crate::coalesce::Reason::Overdue => "overdue",
    };
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

/// This process became active (true) or standby (false).
pub fn active(on: bool) {
    gauge!(ACTIVE).set(if on { 1.0 } else { 0.0 });
}

/// This process took the leadership lock.
pub fn takeover(reason: &'static str) {
    counter!(TAKEOVERS, "reason" => reason).increment(1);
}
