//! The coalescer's async loop: takes jobs from intake, and whenever an AppId has a token and a free call slot,
//! asks the pure [`Coalescer`] what to send and hands the chunk to the dispatcher.
//!
//! Why tokens are taken here and not in the dispatcher: a token taken before
//! the chunk is cut would freeze the chunk while it waits. Taking the token
//! at the last moment lets users keep joining groups for as long as tokens
//! are short, which is what fills calls to five under backlog. The call slot
//! is taken before the token for the same reason the window exists: the
//! token's instant must be the call's start, not a queueing delay later.

use crate::coalesce::{Coalescer, GroupId, Input, Next, Policy, Reason as Why, DEFAULT_DENSE_GAP};
use crate::pipeline::slots::{Slot, Slots};
use crate::pipeline::stage::{Dispatch, Job, JobIn, LedgerWrites, Mode};
use crate::ratelimit::{Gate, Grant};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Default time allowed at shutdown to send what tokens allow before the rest
/// goes back to the queue.
pub(crate) const DEFAULT_DRAIN_DEADLINE: Duration = Duration::from_secs(10);
/// Default longest a halted AppId holds users before handing them back to the
/// broker through a delay queue: far below the broker's 30-minute consumer
/// timeout, so a long halt never gets the channel closed under us.
pub(crate) const DEFAULT_MAX_HOLD: Duration = Duration::from_secs(120);
/// Pending users at which intake is no longer read (prefetch bounds it too;
/// this guards against prefetch set very high with large messages).
pub(crate) const DEFAULT_MAX_PENDING_USERS: usize = 200_000;
/// Most users a halted app holds in the coalescer. Past it, its oldest groups
/// go back to the broker through a delay queue at once instead of after
/// `max_hold`: otherwise a halted app under load would fill the prefetch
/// window and the pending cap, and stall every other app of the worker.
pub(crate) const DEFAULT_MAX_HALTED_PENDING: usize = 1_000;
/// Most messages folded in from the input before deciding again, so a flood
/// of input cannot starve the send side.
const INPUT_BATCH: usize = 512;
/// How often a halted AppId's held users are checked against `max_hold`.
const HALT_CHECK: Duration = Duration::from_secs(1);
/// How often dispatch looks again while the ledger is down.
const LEDGER_CHECK: Duration = Duration::from_millis(200);

/// The coalescer's settings.
#[derive(Debug, Clone, Copy)]
pub struct CoalescerConfig {
    /// The pure policy's timings.
    pub policy: Policy,
    /// Time allowed at shutdown to flush pending users.
    pub drain_deadline: Duration,
    /// Longest a halted AppId holds users.
    pub max_hold: Duration,
    /// Backpressure threshold on pending users.
    pub max_pending_users: usize,
    /// Most users a halted app holds before its oldest go back through a
    /// delay queue at once (see [`DEFAULT_MAX_HALTED_PENDING`]).
    pub max_halted_pending: usize,
}

impl Default for CoalescerConfig {
    fn default() -> Self {
        Self {
            policy: Policy::default(),
            drain_deadline: DEFAULT_DRAIN_DEADLINE,
            max_hold: DEFAULT_MAX_HOLD,
            max_pending_users: DEFAULT_MAX_PENDING_USERS,
            max_halted_pending: DEFAULT_MAX_HALTED_PENDING,
        }
    }
}

fn earliest(a: Option<Instant>, b: Instant) -> Option<Instant> {
    Some(a.map_or(b, |a| a.min(b)))
}

/// What the coalescer runs with, built by the composition root (`pipeline/mod.rs`).
pub(crate) struct Context {
    /// Jobs from the live lane's intake.
    pub live: mpsc::Receiver<JobIn>,
    /// Jobs from the bulk lane's intake.
    pub bulk: mpsc::Receiver<JobIn>,
    /// Chunks to the dispatcher.
    pub output: mpsc::Sender<Dispatch>,
    /// The per-AppId gate: read with `plan`, a token spent with `take`.
    pub gate: Gate,
    /// Call slots per app (`KICKQ_MAX_IN_FLIGHT` each); a chunk carries its slot to the dispatcher.
    pub slots: Slots,
    /// Timings and policy.
    pub cfg: CoalescerConfig,
    /// The router's signal: while ledger writes stall, no call is cut.
    pub ledger: watch::Receiver<LedgerWrites>,
    /// Where the coalescer reports its pending users.
    pub health: Arc<crate::health::Health>,
    /// Fires when the session is gone: stop at once.
    pub abort: CancellationToken,
}

/// Index of the live lane in the per-lane arrays; live is asked first.
const LIVE: usize = 0;
/// Index of the bulk lane.
const BULK: usize = 1;

/// One lane's pending users and what the policy knows of its input.
struct LaneState {
    core: Coalescer<Arc<Job>>,
    input: Input,
    open: bool,
}

/// Live cuts in a row after which a bulk group that has waited `max_wait`
/// takes one token: while live traffic takes every token, bulk still moves
/// at a tenth of the rate and never nears the broker's 30-minute consumer
/// timeout, and a live kick waits one token interval more now and then.
pub(crate) const BULK_EVERY: u32 = 10;

/// Which lane's group gets an app's token now: the live lane's choice if it
/// has one (unless `live_streak` live cuts in a row have left an overdue
/// bulk group waiting, see [`BULK_EVERY`]); else the bulk lane's, so bulk
/// gets every token live leaves free. The earliest instant either lane
/// would be worth a token, when neither is.
pub(crate) fn pick(
    live: Result<(GroupId, Why), Next>,
    live_streak: u32,
    bulk: impl FnOnce() -> Result<(GroupId, Why), Next>,
) -> Pick {
    let live_wait = match live {
        Ok((id, why)) if live_streak + 1 >= BULK_EVERY => match bulk() {
            Ok((bulk_id, Why::Overdue)) => return Pick::Cut(BULK, bulk_id, Why::Overdue),
            _ => return Pick::Cut(LIVE, id, why),
        },
        Ok((id, why)) => return Pick::Cut(LIVE, id, why),
        Err(Next::WaitUntil(at)) => Some(at),
        Err(Next::Idle) => None,
    };
    match bulk() {
        Ok((id, why)) => Pick::Cut(BULK, id, why),
        Err(Next::WaitUntil(at)) => Pick::Wait(Some(live_wait.map_or(at, |l| l.min(at)))),
        Err(Next::Idle) => Pick::Wait(live_wait),
    }
}

/// What [`pick`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Cut this lane's group.
    Cut(usize, GroupId, Why),
    /// Nothing worth a token; look again at this instant (or on new input).
    Wait(Option<Instant>),
}

/// Runs until both inputs close and pending users are sent (or the drain
/// deadline passes: they go back to the queue when the channel closes), or
/// until `abort` fires (the broker session is gone).
pub(crate) async fn run(cx: Context) {
    let Context {
        mut live,
        mut bulk,
        output,
        gate,
        mut slots,
        cfg,
        ledger,
        health,
        abort,
    } = cx;
    let lane = || LaneState {
        core: Coalescer::new(cfg.policy),
        input: Input::default(),
        open: true,
    };
    let mut lanes = [lane(), lane()];
    let mut deadline: Option<Instant> = None;
    // A slot taken for an app whose token then was not free, kept for its next cut.
    let mut held: HashMap<u32, Slot> = HashMap::new();
    // Live cuts in a row per app (see BULK_EVERY).
    let mut live_streak: HashMap<u32, u32> = HashMap::new();
    let mut token_blocked_since: Option<Instant> = None;
    loop {
        let now = Instant::now();
        let pending = lanes[LIVE].core.pending_users() + lanes[BULK].core.pending_users();
        let input_open = lanes[LIVE].open || lanes[BULK].open;
        if !input_open {
            if pending == 0 {
                if deadline.is_some() {
                    tracing::info!("stopping: every pending user was sent; nothing returns to the queue");
                }
                break;
            }
            if deadline.is_some_and(|d| now >= d) {
                tracing::info!(
                    users = pending,
                    "stopping: drain deadline passed; returning {pending} pending user(s) to the queue (their deliveries are not acked)"
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
            let mut apps: Vec<u32> = lanes[LIVE].core.apps().chain(lanes[BULK].core.apps()).collect();
            apps.sort_unstable();
            apps.dedup();
            apps
        };
        'apps: for app in apps {
            let plan = gate.plan(app, now);
            for l in &mut lanes {
                l.core.set_chunk_size(app, plan.users_per_call);
            }
            if plan.halted {
                // Held users go back through a delay queue once they have
                // waited `max_hold`, or at once past `max_halted_pending`,
                // so a halted app never holds the prefetch window or the
                // pending capacity the other apps need.
                // The cap counts the app's users in both lanes; bulk goes back first.
                for lane in [BULK, LIVE] {
                    loop {
                        let held = lanes[LIVE].core.app_users(app) + lanes[BULK].core.app_users(app);
                        let age = match held > cfg.max_halted_pending {
                            true => Duration::ZERO,
                            false => cfg.max_hold,
                        };
                        let l = &mut lanes[lane];
                        let Some(id) = l.core.overdue(app, now, age) else { break };
                        let chunk = l.core.take(app, id).expect("overdue names a live group");
                        let d = Dispatch {
                            chunk,
                            mode: Mode::Defer,
                            slot: None,
                        };
                        if output.send(d).await.is_err() {
                            return;
                        }
                    }
                }
                wake = earliest(wake, now + HALT_CHECK);
            }
            let mut next_token = plan.next_token;
            loop {
                if let Grant::Later(at) = next_token {
                    token_blocked_since.get_or_insert(now);
                    wake = earliest(wake, at);
                    continue 'apps;
                }
                let seen = |l: &LaneState| if l.open { l.input } else { Input::default() };
                let streak = live_streak.get(&app).copied().unwrap_or(0);
                let choice = pick(
                    lanes[LIVE].core.next_with_reason(app, now, seen(&lanes[LIVE])),
                    streak,
                    || lanes[BULK].core.next_with_reason(app, now, seen(&lanes[BULK])),
                );
                let (lane, id, why) = match choice {
                    Pick::Cut(lane, id, why) => (lane, id, why),
                    Pick::Wait(at) => {
                        if let Some(at) = at {
                            wake = earliest(wake, at);
                        }
                        continue 'apps;
                    }
                };
                // A user whose every job is past its not_after is
                // dead-lettered `expired` instead of spending a token; the
                // group is then judged again.
                let wall = chrono::Utc::now();
                if let Some(gone) = lanes[lane].core.remove_expired(app, id, |j| j.request.expired_at(wall)) {
                    let d = Dispatch {
                        chunk: gone,
                        mode: Mode::Expired,
                        slot: None,
                    };
                    if output.send(d).await.is_err() {
                        return;
                    }
                    continue;
                }
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
                let chunk = lanes[lane].core.take(app, id).expect("next names a live group");
                match lane {
                    LIVE => *live_streak.entry(app).or_default() += 1,
                    _ => {
                        live_streak.remove(&app);
                    }
                }
                crate::metrics::coalesced(why.as_str(), chunk.users.len());
                tracing::trace!(?why, lane, users = chunk.users.len(), "cut");
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
        let users = lanes[LIVE].core.pending_users() + lanes[BULK].core.pending_users();
        let groups = lanes[LIVE].core.pending_groups() + lanes[BULK].core.pending_groups();
        health.live().set_pending(users, groups);
        health.set_pending_users(lanes[LIVE].core.pending_users(), lanes[BULK].core.pending_users());

        // Live is read while the live lane is under the cap; bulk only while
        // everything together is, and it is read second.
        let take_live = lanes[LIVE].open && lanes[LIVE].core.pending_users() < cfg.max_pending_users;
        let take_bulk = lanes[BULK].open && users < cfg.max_pending_users;
        tokio::select! {
            biased;
            _ = abort.cancelled() => return,
            msg = live.recv(), if take_live => {
                if !receive(&mut lanes[LIVE], msg, &mut live) {
                    on_closed(&lanes, &mut deadline, cfg.drain_deadline);
                }
            }
            msg = bulk.recv(), if take_bulk => {
                if !receive(&mut lanes[BULK], msg, &mut bulk) {
                    on_closed(&lanes, &mut deadline, cfg.drain_deadline);
                }
            }
            _ = slots.freed(), if need_slot => {}
            _ = sleep_until_opt(wake) => {}
        }
    }
    health.live().set_pending(0, 0);
    health.set_pending_users(0, 0);
}

/// Folds a received job, and whatever else is already queued (up to
/// [`INPUT_BATCH`]), into the lane; `false` when the lane's input closed.
fn receive(lane: &mut LaneState, first: Option<JobIn>, rx: &mut mpsc::Receiver<JobIn>) -> bool {
    let Some(job) = first else {
        lane.open = false;
        return false;
    };
    let t = Instant::now();
    add(&mut lane.core, job, t);
    for _ in 1..INPUT_BATCH {
        match rx.try_recv() {
            Ok(job) => add(&mut lane.core, job, t),
            Err(_) => break,
        }
    }
    lane.input = Input {
        last: Some(t),
        dense: lane.input.last.is_some_and(|prev| t - prev < DEFAULT_DENSE_GAP),
    };
    true
}

/// Once both inputs have closed (shutdown), the drain deadline starts, and
/// the log says what is being drained.
fn on_closed(lanes: &[LaneState; 2], deadline: &mut Option<Instant>, drain: Duration) {
    if !lanes[LIVE].open && !lanes[BULK].open && deadline.is_none() {
        *deadline = Some(Instant::now() + drain);
        let (live, bulk) = (lanes[LIVE].core.pending_users(), lanes[BULK].core.pending_users());
        tracing::info!(
            live_users = live,
            bulk_users = bulk,
            deadline_ms = drain.as_millis() as u64,
            "stopping: no more deliveries taken; sending what the rate allows of {} pending user(s) \
             within the drain deadline, then returning the rest to the queue",
            live + bulk
        );
    }
}

fn add(core: &mut Coalescer<Arc<Job>>, input: JobIn, now: Instant) {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Live takes the token whenever it has a group worth it; bulk takes
    /// every token live leaves; the wake is the earlier of the two waits.
    #[test]
    fn pick_by_table() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let (g1, g2) = (GroupId::for_tests(1), GroupId::for_tests(2));
        type Choice = Result<(GroupId, Why), Next>;
        let cases: &[(Choice, Choice, Pick)] = &[
            (Ok((g1, Why::Full)), Ok((g2, Why::Full)), Pick::Cut(LIVE, g1, Why::Full)),
            (
                Ok((g1, Why::Largest)),
                Ok((g2, Why::Overdue)),
                Pick::Cut(LIVE, g1, Why::Largest),
            ),
            (Err(Next::Idle), Ok((g2, Why::Full)), Pick::Cut(BULK, g2, Why::Full)),
            (
                Err(Next::WaitUntil(at(20))),
                Ok((g2, Why::Full)),
                Pick::Cut(BULK, g2, Why::Full),
            ),
            (
                Err(Next::WaitUntil(at(20))),
                Err(Next::WaitUntil(at(5))),
                Pick::Wait(Some(at(5))),
            ),
            (Err(Next::WaitUntil(at(5))), Err(Next::Idle), Pick::Wait(Some(at(5)))),
            (Err(Next::Idle), Err(Next::WaitUntil(at(7))), Pick::Wait(Some(at(7)))),
            (Err(Next::Idle), Err(Next::Idle), Pick::Wait(None)),
        ];
        for (live, bulk, want) in cases {
            assert_eq!(pick(*live, 0, || *bulk), *want, "live {live:?}, bulk {bulk:?}");
        }
        // After BULK_EVERY - 1 live cuts in a row, an overdue bulk group
        // takes one token; a bulk group that is merely full does not.
        let late = BULK_EVERY - 1;
        let streaks: &[(u32, Choice, Pick)] = &[
            (late, Ok((g2, Why::Overdue)), Pick::Cut(BULK, g2, Why::Overdue)),
            (late, Ok((g2, Why::Full)), Pick::Cut(LIVE, g1, Why::Full)),
            (late - 1, Ok((g2, Why::Overdue)), Pick::Cut(LIVE, g1, Why::Full)),
            (late, Err(Next::Idle), Pick::Cut(LIVE, g1, Why::Full)),
        ];
        for (streak, bulk, want) in streaks {
            assert_eq!(
                pick(Ok((g1, Why::Full)), *streak, || *bulk),
                *want,
                "streak {streak}, bulk {bulk:?}"
            );
        }
    }

    /// Bulk is not even asked while live has a group to cut.
    #[test]
    fn bulk_is_not_asked_when_live_cuts() {
        let g = GroupId::for_tests(1);
        let got = pick(Ok((g, Why::Full)), 0, || panic!("bulk asked although live had a group"));
        assert_eq!(got, Pick::Cut(LIVE, g, Why::Full));
    }
}
