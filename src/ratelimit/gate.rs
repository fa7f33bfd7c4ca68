//! The gate: every AppId's budget behind one mutex, shared by the coalescer and the dispatcher; `acquire` sleeps on
//! tokio's clock, and `report` is the one way a call's result flows back into pacing, chunk size and halt state.

use super::budget::*;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// What the dispatcher tells the gate after a call: the one way results flow
/// back into pacing, chunk size and halt state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Feedback {
    /// The call whose token was spent at `granted` came back now (the `now`
    /// of [`Gate::report`]). The API saw it at some moment between token and
    /// answer; the window counts it from its estimated arrival (the answer
    /// less the fastest recent round trip), or from the answer itself with no
    /// estimate yet or no answer (module docs: the rule and its proof).
    Answered {
        /// When its token was spent.
        granted: Instant,
        /// Whether the gateway answered (any HTTP answer): the round trip is
        /// a sample of the path. `false` for a timeout or a transport error,
        /// which count from now.
        answered: bool,
    },
    /// The API answered with a verdict past authentication (any code but a
    /// halt): the credentials and clock are good again.
    Resumed,
    /// The call kicked its users or found nothing to do: a step towards
    /// growing the chunk back after a shrink.
    Succeeded,
    /// A rate answer (7, 206, the code): slow this AppId down.
    RateLimited(i64),
    /// 50011, the user list is too long: fewer users per call.
    Shrink,
    /// Bad credentials or clock (the code): stop calling but for probes.
    Halt(i64),
}

/// What a [`Feedback`] changed, for the dispatcher's log line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Changed {
    /// Nothing an operator needs to hear about.
    Nothing,
    /// A halt ended (the halt it ended).
    Resumed(Halt),
    /// Users per call are now this many.
    ChunkSize(usize),
    /// The AppId now runs at this fraction of its rate.
    Slowed(f64),
    /// Halted with this code; `log` when the halt line is due (the first
    /// time, then once per interval).
    Halted {
        /// The API's code.
        code: i64,
        /// Whether to log the halt now.
        log: bool,
    },
}

/// The one read of an AppId's state the coalescer makes before cutting calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Most users in one call now (5, less after a 50011 shrink).
    pub users_per_call: usize,
    /// Whether a token is free now, or when the next one is.
    pub next_token: Grant,
    /// Whether the AppId is halted (only probes go).
    pub halted: bool,
}

/// Shared, thread-safe budgets of every AppId. Cheap to clone.
#[derive(Clone, Debug)]
pub(crate) struct Gate {
    inner: Arc<Mutex<Budgets>>,
    /// The limit of an AppId not in `limits`.
    limit: u32,
    /// Per-AppId limits (each app's configured `rate`).
    limits: Arc<HashMap<u32, u32>>,
    probe_interval: Duration,
    /// Where every budget counts answered calls from.
    counting: Counting,
}

#[derive(Debug, Default)]
struct Budgets {
    apps: HashMap<u32, AppBudget>,
}

impl Gate {
    /// Budgets of `limit` calls per second for every AppId.
    pub(crate) fn new(limit: u32, probe_interval: Duration) -> Self {
        Self {
            inner: Arc::default(),
            limit,
            limits: Arc::default(),
            probe_interval,
            counting: Counting::default(),
        }
    }

    /// Budgets that count answered calls as `counting` says (the default is
    /// [`Counting::Arrival`]; the bench's baseline uses
    /// [`Counting::Answer`]). For a gate no budget was made in yet.
    pub(crate) fn with_counting(mut self, counting: Counting) -> Self {
        self.counting = counting;
        self
    }

    /// Budgets of each app's own limit; an AppId not listed gets the
    /// documented 50 (none reaches the gate: intake refuses unknown apps).
    pub(crate) fn with_limits(limits: impl IntoIterator<Item = (u32, u32)>, probe_interval: Duration) -> Self {
        Self {
            limits: Arc::new(limits.into_iter().collect()),
            ..Self::new(crate::config::DEFAULT_RATE, probe_interval)
        }
    }

    /// The calls per second an AppId is allowed.
    pub(crate) fn limit(&self, app_id: u32) -> u32 {
        self.limits.get(&app_id).copied().unwrap_or(self.limit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Budgets> {
        self.inner
            .lock()
            .expect("the gate's mutex is never held across a panic")
    }

    /// Takes in what a call's result says about the AppId (see [`Feedback`]);
    /// returns what changed. The only way results reach the budget.
    pub(crate) fn report(&self, app_id: u32, feedback: Feedback, now: Instant, halt_log_interval: Duration) -> Changed {
        self.with(app_id, |b| match feedback {
            Feedback::Answered { granted, answered } => {
                b.sent(granted, now, answered);
                Changed::Nothing
            }
            Feedback::Resumed => b.resume().map_or(Changed::Nothing, Changed::Resumed),
            Feedback::Succeeded => b.succeeded().map_or(Changed::Nothing, Changed::ChunkSize),
            Feedback::Shrink => Changed::ChunkSize(b.shrink()),
            Feedback::RateLimited(code) => match b.slow_down(code, now) {
                true => Changed::Slowed(b.factor(now)),
                false => Changed::Nothing,
            },
            Feedback::Halt(code) => {
                b.halt(code, now);
                Changed::Halted {
                    code,
                    log: b.should_log_halt(now, halt_log_interval),
                }
            }
        })
    }

    /// Users per call, the next token and the halt state of an AppId now,
    /// read at once. Spends nothing.
    pub(crate) fn plan(&self, app_id: u32, now: Instant) -> Plan {
        self.with(app_id, |b| Plan {
            users_per_call: b.chunk_size(),
            next_token: b.peek(now),
            halted: b.halted().is_some(),
        })
    }

    /// Spends a token for a call now, if one is free ([`Grant::Now`]), or the
    /// probe of a halted AppId when it is due ([`Grant::Probe`]); else says
    /// when to ask again.
    pub(crate) fn take(&self, app_id: u32, now: Instant) -> Grant {
        self.with(app_id, |b| {
            let grant = b.try_acquire(now);
            if matches!(grant, Grant::Now | Grant::Probe) {
                b.track(now);
            }
            grant
        })
    }

    /// Runs `f` on the AppId's budget, creating it on first use (a shard's
    /// takeover hold creates the budgets of its apps, so a hold is never
    /// missed).
    pub(super) fn with<R>(&self, app_id: u32, f: impl FnOnce(&mut AppBudget) -> R) -> R {
        let mut guard = self.lock();
        let budget = guard.apps.entry(app_id).or_insert_with(|| {
            AppBudget::new(self.limit(app_id), self.probe_interval, Instant::now()).with_counting(self.counting)
        });
        f(budget)
    }

    /// Holds these AppIds until `at`: called when this process becomes the
    /// active worker of the shard that serves them. Other AppIds (another
    /// shard's, with its own lock) are not held.
    pub(crate) fn hold_apps_until(&self, apps: &[u32], at: Instant) {
        for app in apps {
            self.with(*app, |b| b.hold_until(at));
        }
    }

    /// Allows calls of these AppIds only before `until`: the end of this
    /// process's leadership lease of the shard that serves them.
    pub(crate) fn lease_apps_until(&self, apps: &[u32], until: Option<Instant>) {
        for app in apps {
            self.with(*app, |b| b.lease_until(until));
        }
    }

    /// The start of the most recent call of these AppIds.
    pub(crate) fn last_call_of(&self, apps: &[u32]) -> Option<Instant> {
        let guard = self.lock();
        apps.iter().filter_map(|a| guard.apps.get(a)?.last_call()).max()
    }

    /// Waits for a token, or returns `None` at once if the AppId is halted:
    /// a caller that is not the coalescer (a split retry inside the
    /// dispatcher) must not spend the probe.
    /// Returns the instant the token was spent at, for [`Feedback::Answered`].
    pub(crate) async fn acquire(&self, app_id: u32) -> Option<Instant> {
        loop {
            let now = Instant::now();
            let grant = self.with(app_id, |b| {
                if b.halted().is_some() {
                    None
                } else {
                    let grant = b.try_acquire(now);
                    if matches!(grant, Grant::Now | Grant::Probe) {
                        b.track(now);
                    }
                    Some(grant)
                }
            });
            match grant {
                None => return None,
                Some(Grant::Now) | Some(Grant::Probe) => return Some(now),
                Some(Grant::Later(at)) => tokio::time::sleep_until(at).await,
            }
        }
    }

    /// Every AppId's slow-down factor now (1 = full rate), for reporting.
    pub(crate) fn factors(&self, now: Instant) -> Vec<(u32, f64)> {
        let mut guard = self.lock();
        let mut v: Vec<(u32, f64)> = guard.apps.iter_mut().map(|(app, b)| (*app, b.factor(now))).collect();
        v.sort_by_key(|(app, _)| *app);
        v
    }

    /// AppIds running below their rate now, in ascending order (for the
    /// console). Reads the budgets without changing them.
    pub(crate) fn slowed_apps(&self, now: Instant) -> Vec<(u32, Slowed)> {
        let guard = self.lock();
        let mut v: Vec<(u32, Slowed)> = guard
            .apps
            .iter()
            .filter_map(|(app, b)| b.slowed(now).map(|s| (*app, s)))
            .collect();
        v.sort_by_key(|(app, _)| *app);
        v
    }

    /// AppIds with a budget, in ascending order: those called (or held) since
    /// the process started (for `/status`).
    pub(crate) fn app_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.lock().apps.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// Halted AppIds now (for readiness and metrics).
    pub(crate) fn halted_apps(&self) -> Vec<(u32, Halt)> {
        self.lock()
            .apps
            .iter()
            .filter_map(|(app, b)| b.halted().map(|h| (*app, h)))
            .collect()
    }
}
