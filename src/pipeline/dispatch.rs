//! The dispatcher: runs each chunk's call concurrently (within the call slots the coalescer hands out),
//! classifies the answer, resolves splits (50002, 2) and shrinks (50011) with further paid calls, feeds rate and
//! halt signals to the gate, and passes per-user results to the outcome router.

use crate::coalesce::{Chunk, ChunkUser};
use crate::ledger::CallRow;
use crate::pipeline::stage::{ChunkOutcome, Dispatch, Job, Mode, RouterInput, UserResult};
use crate::ratelimit::{Changed, Feedback, Gate};
use crate::zego::client::{CallResult, TransportError, ZegoClient};
use crate::zego::clients::Clients;
use crate::zego::codes::{classify, Disposition};
use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Default most calls in flight at once. At 50 calls/s this allows 2 s of
/// latency per call before the slots, not the rate, become the limit, and a
/// slow room holds at most its own slot.
pub(crate) const DEFAULT_MAX_IN_FLIGHT: usize = 100;
/// Default interval between repeats of the halt log line.
pub(crate) const DEFAULT_HALT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// The call the dispatcher makes; one client per app in production, a fake
/// in unit tests.
pub trait KickApi: Send + Sync + 'static {
    /// One KickoutUser call for the AppId.
    fn kickout(
        &self,
        app_id: u32,
        room_id: &str,
        user_ids: &[String],
        reason: Option<&str>,
    ) -> impl Future<Output = CallResult> + Send;
}

/// A single client signs for its own AppId whatever it is asked: for callers
/// that serve one app.
impl KickApi for ZegoClient {
    fn kickout(
        &self,
        _app_id: u32,
        room_id: &str,
        user_ids: &[String],
        reason: Option<&str>,
    ) -> impl Future<Output = CallResult> + Send {
        ZegoClient::kickout(self, room_id, user_ids, reason)
    }
}

impl KickApi for Clients {
    async fn kickout(&self, app_id: u32, room_id: &str, user_ids: &[String], reason: Option<&str>) -> CallResult {
        match self.get(app_id) {
            Some(client) => client.kickout(room_id, user_ids, reason).await,
            // Intake lets only configured apps through, so no call gets
            // here; were one to, no request was sent: a connect failure
            // (retried, then dead-lettered) says exactly that.
            None => CallResult {
                result: Err(TransportError::Connect(format!("no client for app {app_id}"))),
                started_at: chrono::Utc::now(),
                latency: Duration::ZERO,
            },
        }
    }
}

/// Runs until the input closes, then waits for the calls in flight. When
/// `abort` fires (the session is gone, so is the leadership lock) nothing more
/// is called: chunks still queued are dropped, and calls in flight with their
/// split or shrink follow-ups are abandoned; their deliveries return to the
/// queue with the connection.
pub(crate) async fn run<A: KickApi>(
    mut input: mpsc::Receiver<Dispatch>,
    output: mpsc::Sender<RouterInput>,
    api: Arc<A>,
    gate: Gate,
    health: Arc<crate::health::Health>,
    halt_log_interval: Duration,
    abort: CancellationToken,
) {
    let tracker = TaskTracker::new();
    loop {
        let d = tokio::select! {
            biased;
            _ = abort.cancelled() => break,
            d = input.recv() => match d {
                Some(d) => d,
                None => break,
            },
        };
        let (api, gate, output, abort, health) =
            (api.clone(), gate.clone(), output.clone(), abort.clone(), health.clone());
        tracker.spawn(async move {
            let work = async {
                match d.mode {
                    Mode::Call(granted) => {
                        execute(&*api, &gate, health.live(), d.chunk, Some(granted), halt_log_interval).await
                    }
                    Mode::Defer => deferred(d.chunk),
                    Mode::Expired => expired(d.chunk),
                }
            };
            let outcome = tokio::select! {
                biased;
                _ = abort.cancelled() => return,
                outcome = work => outcome,
            };
            // The slot is held until the router takes the outcome, so a
            // stalled router (ledger away) pauses dispatch instead of
            // piling up results.
            let _ = output.send(RouterInput::Outcome(outcome)).await;
            drop(d.slot);
        });
    }
    tracker.close();
    tracker.wait().await;
}

fn deferred(chunk: Chunk<Arc<Job>>) -> ChunkOutcome {
    ChunkOutcome {
        users: chunk
            .users
            .into_iter()
            .map(|u| {
                user_result(
                    u,
                    Disposition::Halt,
                    None,
                    None,
                    "held past the hold limit while halted",
                )
            })
            .collect(),
        calls: Vec::new(),
    }
}

fn expired(chunk: Chunk<Arc<Job>>) -> ChunkOutcome {
    ChunkOutcome {
        users: chunk
            .users
            .into_iter()
            .map(|u| UserResult {
                expired: true,
                ..user_result(
                    u,
                    Disposition::DeadLetter,
                    None,
                    None,
                    "not_after had passed when its call's turn came; no call was made",
                )
            })
            .collect(),
        calls: Vec::new(),
    }
}

fn user_result(
    u: ChunkUser<Arc<Job>>,
    disposition: Disposition,
    code: Option<i64>,
    request_id: Option<&str>,
    detail: &str,
) -> UserResult {
    UserResult {
        user_id: u.user_id,
        waiters: u.waiters,
        disposition,
        code,
        request_id: request_id.map(str::to_owned),
        detail: detail.to_owned(),
        expired: false,
    }
}

/// Whether an HTTP answer came back, so the call's round trip is a sample
/// of the path (`ratelimit`'s floor). Any status counts: an answer from a
/// proxy in front of the gateway is a shorter round trip, which only lowers
/// the floor (safe). A timeout or a failed connection is no sample.
pub(crate) fn answered_by_gateway(result: &Result<crate::zego::ApiReply, crate::zego::TransportError>) -> bool {
    use crate::zego::TransportError as T;
    match result {
        Ok(_) => true,
        Err(T::HttpStatus(_) | T::NotJson { .. } | T::Redirect(_)) => true,
        Err(_) => false,
    }
}

/// Calls the API for a chunk (its token is already spent) and for any split
/// or shrunk sub-chunks (each pays its own token), and says what became of
/// every user.
pub(crate) async fn execute<A: KickApi>(
    api: &A,
    gate: &Gate,
    live: &crate::health::Live,
    chunk: Chunk<Arc<Job>>,
    granted: Option<Instant>,
    halt_log_interval: Duration,
) -> ChunkOutcome {
    let key = chunk.key;
    let app = key.app_id;
    let mut work: VecDeque<Vec<ChunkUser<Arc<Job>>>> = VecDeque::from([chunk.users]);
    let mut users = Vec::new();
    let mut calls = Vec::new();
    let mut paid = true;
    let mut token = granted;
    while let Some(group) = work.pop_front() {
        if !paid {
            token = gate.acquire(app).await;
        }
        if !paid && token.is_none() {
            // Halted while splitting: these users wait for the halt to end.
            users.extend(
                group
                    .into_iter()
                    .map(|u| user_result(u, Disposition::Halt, None, None, "halted before this call")),
            );
            continue;
        }
        paid = false;
        let ids: Vec<String> = group.iter().map(|u| u.user_id.to_string()).collect();
        // In flight from the request to its answer; counted in the call
        // rate when the answer (or the transport failure) comes.
        let in_flight = live.call_started();
        let call = api.kickout(key.app_id, &key.room_id, &ids, key.reason.as_deref()).await;
        drop(in_flight);
        live.calls_answered(key.app_id, 1);
        if let Some(granted) = token {
            let answered = answered_by_gateway(&call.result);
            gate.report(
                app,
                Feedback::Answered { granted, answered },
                Instant::now(),
                halt_log_interval,
            );
        }
        let disposition = classify(&call.result, ids.len());
        let (code, message, request_id, http_status, transport) = match &call.result {
            Ok(r) => (
                Some(r.code),
                Some(r.message.clone()),
                Some(r.request_id.clone()),
                Some(r.http_status),
                None,
            ),
            Err(e) => (None, None, None, None, Some(e.to_string())),
        };
        let attempt = group
            .iter()
            .flat_map(|u| u.waiters.iter())
            .map(|j| j.attempts)
            .max()
            .unwrap_or(0)
            + 1;
        crate::metrics::api_call(key.app_id, disposition.as_str(), code, call.latency, ids.len());
        tracing::debug!(room = %key.room_id, users = ids.len(), code, disposition = disposition.as_str(), latency_ms = call.latency.as_millis() as u64, request_id = request_id.as_deref().unwrap_or(""), "call answered");
        let detail = match (&message, &transport) {
            (Some(m), _) => m.clone(),
            (None, Some(t)) => t.clone(),
            (None, None) => String::new(),
        };
        calls.push(CallRow {
            app_id: app,
            room_id: key.room_id.to_string(),
            user_ids: ids,
            reason: key.reason.as_deref().map(str::to_owned),
            attempt,
            code,
            message,
            request_id: request_id.clone(),
            http_status,
            transport_error: transport,
            latency: call.latency,
            started_at: call.started_at,
        });
        let now = Instant::now();
        let report = |feedback| gate.report(app, feedback, now, halt_log_interval);
        if code.is_some() && disposition != Disposition::Halt {
            // Any verdict past authentication proves the credentials and clock are good again.
            if let Changed::Resumed(h) = report(Feedback::Resumed) {
                crate::metrics::app_halted(app, false);
                tracing::info!(
                    app_id = app,
                    code = h.code,
                    halted_for_s = (now - h.since).as_secs(),
                    "API accepts calls again; resuming"
                );
            }
        }
        if matches!(disposition, Disposition::Kicked | Disposition::NothingToDo) {
            if let Changed::ChunkSize(size) = report(Feedback::Succeeded) {
                tracing::info!(
                    app_id = app,
                    chunk_size = size,
                    "calls succeed again; one more user per call"
                );
            }
        }
        match disposition {
            Disposition::SplitUsers => work.extend(group.into_iter().map(|u| vec![u])),
            Disposition::ShrinkChunk => {
                let Changed::ChunkSize(size) = report(Feedback::Shrink) else {
                    unreachable!("a shrink always reports the new chunk size")
                };
                tracing::warn!(
                    app_id = app,
                    chunk_size = size,
                    "API says the user list is too long (50011); calls now carry fewer users"
                );
                let mut rest = group.into_iter().peekable();
                while rest.peek().is_some() {
                    work.push_back(rest.by_ref().take(size).collect());
                }
            }
            other => {
                match other {
                    Disposition::RateLimited => {
                        if let Changed::Slowed(factor) = report(Feedback::RateLimited(code.unwrap_or_default())) {
                            tracing::info!(
                                app_id = app,
                                code,
                                rate_factor = factor,
                                "rate-limit answer; slowing this AppId down"
                            );
                        }
                    }
                    Disposition::Halt => {
                        let c = code.unwrap_or_default();
                        let changed = report(Feedback::Halt(c));
                        crate::metrics::app_halted(app, true);
                        if let Changed::Halted { log: true, .. } = changed {
                            tracing::error!(
                                app_id = app,
                                code = c,
                                meaning = crate::zego::codes::describe(c),
                                check = crate::zego::codes::halt_hint(c),
                                "API rejects this AppId's calls; halted: no calls except a probe now and then, and no message is dead-lettered; {}",
                                crate::zego::codes::halt_hint(c)
                            );
                        }
                    }
                    _ => {}
                }
                users.extend(
                    group
                        .into_iter()
                        .map(|u| user_result(u, other, code, request_id.as_deref(), &detail)),
                );
            }
        }
    }
    ChunkOutcome { users, calls }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coalesce::GroupKey;
    use crate::job::KickRequest;
    use crate::zego::client::ApiReply;
    use std::sync::Mutex;

    /// Answers by a script: a function of the user list.
    struct Fake {
        seen: Mutex<Vec<Vec<String>>>,
        answer: fn(&[String]) -> Result<i64, TransportError>,
    }

    impl KickApi for Fake {
        fn kickout(
            &self,
            _app_id: u32,
            _room: &str,
            users: &[String],
            _reason: Option<&str>,
        ) -> impl Future<Output = CallResult> + Send {
            self.seen.lock().unwrap().push(users.to_vec());
            let result = (self.answer)(users).map(|code| ApiReply {
                code,
                message: format!("code {code}"),
                request_id: "rid".into(),
                http_status: 200,
            });
            async move {
                CallResult {
                    result,
                    started_at: chrono::Utc::now(),
                    latency: Duration::from_millis(1),
                }
            }
        }
    }

    fn chunk(users: &[&str]) -> Chunk<Arc<Job>> {
        let job = job(1, users);
        Chunk {
            key: key(),
            users: users
                .iter()
                .map(|u| ChunkUser {
                    user_id: Arc::from(*u),
                    waiters: vec![job.clone()],
                })
                .collect(),
        }
    }

    fn key() -> GroupKey {
        GroupKey {
            app_id: 1,
            room_id: "r".into(),
            reason: None,
        }
    }

    fn job(id: u64, users: &[&str]) -> Arc<Job> {
        Arc::new(Job {
            id,
            lane: crate::amqp::topology::Lane::Live,
            request: KickRequest {
                room_id: "r".into(),
                user_ids: users.iter().map(|u| u.to_string()).collect(),
                reason: None,
                app_id: None,
                job_id: Some(format!("j{id}")),
                not_after: None,
            },
            app_id: 1,
            attempts: 0,
            first_attempt_at: None,
            rate_limited: 0,
            halted_for: Duration::ZERO,
            redelivered: false,
            halted_before: false,
            received_at: chrono::Utc::now(),
            carried: Default::default(),
        })
    }

    fn dispositions(o: &ChunkOutcome) -> Vec<(String, Disposition)> {
        let mut v: Vec<_> = o.users.iter().map(|u| (u.user_id.to_string(), u.disposition)).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[tokio::test(start_paused = true)]
    async fn user_not_in_room_splits_into_single_calls_each_paying_a_token() {
        let api = Fake {
            seen: Mutex::default(),
            answer: |users| {
                Ok(if users.len() > 1 || users[0] == "ghost" {
                    50002
                } else {
                    0
                })
            },
        };
        let gate = Gate::new(50, Duration::from_secs(30));
        let out = execute(
            &api,
            &gate,
            &crate::health::Live::default(),
            chunk(&["a", "ghost", "b"]),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        assert_eq!(
            api.seen.lock().unwrap().len(),
            4,
            "one call of three, then three of one"
        );
        assert_eq!(
            dispositions(&out),
            vec![
                ("a".into(), Disposition::Kicked),
                ("b".into(), Disposition::Kicked),
                ("ghost".into(), Disposition::NothingToDo)
            ]
        );
        assert_eq!(out.calls.len(), 4);
    }

    /// Five users of five jobs in one call; one id is outside the vendor's
    /// set and the API answers 2 for any call that carries it.
    fn five_jobs_one_bad_id() -> Chunk<Arc<Job>> {
        let users = ["a", "b", "bad id 😀", "c", "d"];
        Chunk {
            key: key(),
            users: (1..)
                .zip(users)
                .map(|(id, u)| ChunkUser {
                    user_id: Arc::from(u),
                    waiters: vec![job(id, &[u])],
                })
                .collect(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn input_parameter_error_on_several_users_splits_and_dead_letters_only_the_refused_one() {
        let api = Fake {
            seen: Mutex::default(),
            answer: |users| Ok(if users.iter().any(|u| u.contains(' ')) { 2 } else { 0 }),
        };
        let gate = Gate::new(50, Duration::from_secs(30));
        let out = execute(
            &api,
            &gate,
            &crate::health::Live::default(),
            five_jobs_one_bad_id(),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        let sizes: Vec<usize> = api.seen.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![5, 1, 1, 1, 1, 1], "one call of five, then one call each");
        assert_eq!(
            dispositions(&out),
            vec![
                ("a".into(), Disposition::Kicked),
                ("b".into(), Disposition::Kicked),
                ("bad id 😀".into(), Disposition::DeadLetter),
                ("c".into(), Disposition::Kicked),
                ("d".into(), Disposition::Kicked),
            ]
        );
        let bad = out.users.iter().find(|u| &*u.user_id == "bad id 😀").unwrap();
        assert_eq!(bad.code, Some(2));
        assert_eq!(bad.waiters.len(), 1);
        assert_eq!(
            bad.waiters[0].request.job_id.as_deref(),
            Some("j3"),
            "the bad user's own job"
        );
        assert_eq!(out.calls[0].code, Some(2), "the first call answered 2: split");
        assert_eq!(out.calls.len(), 6);
    }

    #[tokio::test(start_paused = true)]
    async fn input_parameter_error_on_one_user_dead_letters_it_without_more_calls() {
        let api = Fake {
            seen: Mutex::default(),
            answer: |_| Ok(2),
        };
        let gate = Gate::new(50, Duration::from_secs(30));
        let out = execute(
            &api,
            &gate,
            &crate::health::Live::default(),
            chunk(&["a"]),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        assert_eq!(api.seen.lock().unwrap().len(), 1);
        assert_eq!(dispositions(&out), vec![("a".into(), Disposition::DeadLetter)]);
    }

    #[tokio::test(start_paused = true)]
    async fn list_too_long_halves_the_chunk_size_and_retries() {
        let api = Fake {
            seen: Mutex::default(),
            answer: |users| Ok(if users.len() > 2 { 50011 } else { 0 }),
        };
        let gate = Gate::new(50, Duration::from_secs(30));
        let out = execute(
            &api,
            &gate,
            &crate::health::Live::default(),
            chunk(&["a", "b", "c", "d", "e"]),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        assert_eq!(gate.plan(1, Instant::now()).users_per_call, 2);
        let sizes: Vec<usize> = api.seen.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![5, 2, 2, 1]);
        assert!(out.users.iter().all(|u| u.disposition == Disposition::Kicked));
        // One stray 50011 is not a permanent halving: successes grow it back.
        for _ in 0..crate::ratelimit::GROW_AFTER_SUCCESSES * 3 {
            execute(
                &api,
                &gate,
                &crate::health::Live::default(),
                chunk(&["a", "b"]),
                None,
                DEFAULT_HALT_LOG_INTERVAL,
            )
            .await;
        }
        assert_eq!(gate.plan(1, Instant::now()).users_per_call, 5);
    }

    #[tokio::test(start_paused = true)]
    async fn halt_and_rate_answers_reach_the_gate() {
        let gate = Gate::new(50, Duration::from_secs(30));
        let halting = Fake {
            seen: Mutex::default(),
            answer: |_| Ok(100000005),
        };
        let out = execute(
            &halting,
            &gate,
            &crate::health::Live::default(),
            chunk(&["a"]),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        assert_eq!(out.users[0].disposition, Disposition::Halt);
        assert_eq!(gate.halted_apps()[0].1.code, 100000005);
        let ok = Fake {
            seen: Mutex::default(),
            answer: |_| Ok(0),
        };
        execute(
            &ok,
            &gate,
            &crate::health::Live::default(),
            chunk(&["a"]),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        assert!(gate.halted_apps().is_empty(), "a success resumes");
        let limited = Fake {
            seen: Mutex::default(),
            answer: |_| Ok(206),
        };
        let out = execute(
            &limited,
            &gate,
            &crate::health::Live::default(),
            chunk(&["a"]),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        assert_eq!(out.users[0].disposition, Disposition::RateLimited);
        assert!(gate.factors(Instant::now())[0].1 < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn transport_failures_retry_and_carry_no_code() {
        let gate = Gate::new(50, Duration::from_secs(30));
        let api = Fake {
            seen: Mutex::default(),
            answer: |_| Err(TransportError::Timeout),
        };
        let out = execute(
            &api,
            &gate,
            &crate::health::Live::default(),
            chunk(&["a", "b"]),
            None,
            DEFAULT_HALT_LOG_INTERVAL,
        )
        .await;
        assert!(out
            .users
            .iter()
            .all(|u| matches!(u.disposition, Disposition::Retry(_)) && u.code.is_none()));
        assert_eq!(
            out.calls[0].transport_error.as_deref(),
            Some(TransportError::Timeout.to_string().as_str())
        );
    }
}
