//! The coalescer's async loop: takes jobs from intake, and whenever an AppId has a token and a free call slot,
//! asks the pure [`Coalescer`] what to send and hands the chunk to the dispatcher.
//!
//! Why tokens are taken here and not in the dispatcher: a token taken before
//! the chunk is cut would freeze the chunk while it waits. Taking the token
//! at the last moment lets users keep joining groups for as long as tokens
//! are short, which is what fills calls to five under backlog. The call slot
//! is taken before the token for the same reason the window exists: the
//! token's instant must be the call's start, not a queueing delay later.

use crate::coalesce::{Coalescer, Input, Next, Policy, DEFAULT_DENSE_GAP};
use crate::pipeline::slots::{Slot, Slots};
use crate::pipeline::stage::{Dispatch, JobIn, LedgerWrites, Mode};
use crate::ratelimit::{Gate, Grant};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default time allowed at shutdown to send what tokens allow before the rest
/// goes back to the queue.
pub const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Default longest a halted AppId holds users before handing them back to the
/// broker through a delay queue: far below the broker's 30-minute consumer
/// timeout, so a long halt never gets the channel closed under us.
pub const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(120);
/// Pending users at which intake is no longer read (prefetch bounds it too;
/// this guards against prefetch set very high with large messages).
pub const DEFAULT_MAX_PENDING_USERS: usize = 200_000;
/// Most messages folded in from the input before deciding again, so a flood
/// of input cannot starve the send side.
const INPUT_BATCH: usize = 512;
/// How often a halted AppId's held users are checked against `max_hold`.
const HALT_CHECK: Duration = Duration::from_secs(1);
/// How often dispatch looks again while the ledger is down.
const LEDGER_CHECK: Duration = Duration::from_millis(200);

/// The driver's settings.
#[derive(Debug, Clone, Copy)]
pub struct DriverConfig {
    /// The pure policy's timings.
    pub policy: Policy,
    /// Time allowed at shutdown to flush pending users.
    pub drain_deadline: Duration,
    /// Longest a halted AppId holds users.
    pub max_hold: Duration,
    /// Backpressure threshold on pending users.
    pub max_pending_users: usize,
}

impl Default for DriverConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            max_hold: DEFAULT_MAX_HOLD,
            max_pending_users: DEFAULT_MAX_PENDING_USERS,
        }
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// What the coalescer runs with, built by the composition root (`pipeline/mod.rs`).
pub struct Context {
    /// Jobs from intake.
    pub input: mpsc::Receiver<JobIn>,
    /// Chunks to the dispatcher.
    pub output: mpsc::Sender<Dispatch>,
    /// The per-AppId gate: read with `plan`, a token spent with `take`.
    pub gate: Gate,
    /// Call slots per app (`KICKQ_MAX_IN_FLIGHT` each); a chunk carries its slot to the dispatcher.
    pub slots: Slots,
    /// Timings and policy.
    pub cfg: DriverConfig,
    /// The router's signal: while ledger writes stall, no call is cut.
    pub ledger: watch::Receiver<LedgerWrites>,
    /// Where the coalescer reports its pending users.
    pub health: Arc<crate::health::Health>,
    /// Fires when the session is gone: stop at once.
    pub abort: CancellationToken,
}

/// Runs until the input closes and pending users are sent (or the drain
/// deadline passes: they go back to the queue when the channel closes), or
/// until `abort` fires (the broker session is gone).
pub async fn run(cx: Context) {
    let Context {
        mut input,
        output,
        gate,
        mut slots,
        cfg,
        ledger,
        health,
        abort,
    } = cx;
    let mut core: Coalescer<Arc<crate::pipeline::stage::Job>> = Coalescer::new(cfg.policy);
    let mut input_open = true;
    let mut input_state = Input::default();
    let mut deadline: Option<Instant> = None;
    // A slot taken for an app whose token then was not free, kept for its next cut.
    let mut held: HashMap<u32, Slot> = HashMap::new();
    let mut token_blocked_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if !input_open {
            if core.is_empty() {
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                tracing::info!(
                    users = core.pending_users(),
                    "drain deadline passed; returning the rest to the queue"
                );
                break;
            }
        }
        let mut wake = deadline;
        let mut need_slot = false;
        // With the ledger down, calls made now could not be recorded and their
        // deliveries not acked: hold everything until it is back.
        let apps: Vec<u32> = if *ledger.borrow() == LedgerWrites::Stalled {
            wake = earliest(wake, now + LEDGER_CHECK);
            Vec::new()
        } else {
            core.apps().collect()
        };
        'apps: for app in apps {
            let plan = gate.plan(app, now);
            core.set_chunk_size(app, plan.users_per_call);
            if plan.halted {
                while let Some(id) = core.overdue(app, now, cfg.max_hold) {
                    let chunk = core.take(app, id).expect("overdue names a live group");
                    let d = Dispatch {
                        chunk,
                        mode: Mode::Defer,
                        slot: None,
                    };
                    if output.send(d).await.is_err() {
                        return;
                    }
                }
                wake = earliest(wake, now + HALT_CHECK);
            }
            let mut next_token = plan.next_token;
            loop {
                if let Grant::Later(at) = next_token {
                    if !core.is_empty() {
                        token_blocked_since.get_or_insert(now);
                    }
                    wake = earliest(wake, at);
                    continue 'apps;
                }
                let seen = if input_open { input_state } else { Input::default() };
                let (id, why) = match core.next_with_reason(app, now, seen) {
                    Err(Next::WaitUntil(at)) => {
                        wake = earliest(wake, at);
                        continue 'apps;
                    }
                    Err(_) => continue 'apps,
                    Ok(choice) => choice,
                };
                // The app's own slots only: one app's slow calls never
                // take another's.
                let slot = match held.remove(&app).or_else(|| slots.try_take(app)) {
                    Some(s) => s,
                    None => {
                        need_slot = true;
                        continue 'apps;
                    }
                };
                if let Grant::Later(at) = gate.take(app, now) {
                    held.insert(app, slot);
                    wake = earliest(wake, at);
                    continue 'apps;
                }
                if let Some(since) = token_blocked_since.take() {
                    crate::metrics::token_wait(now - since);
                }
                let chunk = core.take(app, id).expect("next names a live group");
                crate::metrics::coalesced(why.as_str(), chunk.users.len());
                tracing::trace!(
                    ?why,
                    users = chunk.users.len(),
                    pending = core.pending_users(),
                    ?seen,
                    "cut"
                );
                let d = Dispatch {
                    chunk,
                    mode: Mode::Call(now),
                    slot: Some(slot),
                };
                if output.send(d).await.is_err() {
                    return;
                }
                next_token = gate.plan(app, now).next_token;
            }
        }
        crate::metrics::pending(core.pending_users(), core.pending_groups());
        health.set_pending_users(core.pending_users());

        let accepting = input_open && core.pending_users() < cfg.max_pending_users;
        tokio::select! {
            biased;
            _ = abort.cancelled() => return,
            msg = input.recv(), if accepting => match msg {
                Some(job) => {
                    let t = Instant::now();
                    add(&mut core, job, t);
                    for _ in 1..INPUT_BATCH {
                        match input.try_recv() {
                            Ok(job) => add(&mut core, job, t),
                            Err(_) => break,
                        }
                    }
                    input_state = Input {
                        last: Some(t),
                        dense: input_state.last.is_some_and(|prev| t - prev < DEFAULT_DENSE_GAP),
                    };
                }
                None => {
                    input_open = false;
                    deadline = Some(Instant::now() + cfg.drain_deadline);
                }
            },
            _ = slots.freed(), if need_slot => {}
            _ = sleep_until_opt(wake) => {}
        }
    }
    crate::metrics::pending(0, 0);
    health.set_pending_users(0);
}

fn add(core: &mut Coalescer<Arc<crate::pipeline::stage::Job>>, input: JobIn, now: Instant) {
    let key = crate::coalesce::GroupKey {
        app_id: input.job.app_id,
        room_id: Arc::from(input.job.request.room_id.as_str()),
        reason: input.job.request.reason.as_deref().map(Arc::from),
    };
    core.add(key, input.users, input.job, now);
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
