//! The first and last steps of an active session, and its lease keeper: wait for the leadership token as a
//! standby, hold the first call for the takeover, renew the lease while active (the gate refuses calls once it
//! runs out), and release it last. The rules and their proof are `crate::leadership`; the broker side is
//! `crate::amqp::lease`.

use super::stage::CLOSE_STEP;
use crate::amqp::connect::describe;
use crate::amqp::lease::{self as broker, Lease, LeaseError};
use crate::amqp::publish::Publisher;
use crate::amqp::topology::Names;
use crate::health::ShardState;
use crate::leadership::{self, Record, LEASE, RENEW_INTERVAL};
use crate::ratelimit::{Gate, WINDOW};
use lapin::Connection;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// What the lease steps need of the session: the shard's names, its worker's
/// connection name, its state, the gate and its apps, and the stop signal.
/// The composition root builds it; a stage never reaches back into it.
pub(crate) struct Seat<'a> {
    /// The shard's queue names (its lease, its record).
    pub(crate) names: &'a Names,
    /// The worker's `KICKQ_CONNECTION_NAME`: the lease consumer's tag base.
    pub(crate) connection_name: &'a str,
    /// This shard's role (standby or active).
    pub(crate) shard: &'a ShardState,
    /// The per-AppId budgets: held for the takeover, leased while active.
    pub(crate) gate: &'a Gate,
    /// The AppIds this shard serves: its hold and its record are theirs only.
    pub(crate) apps: Vec<u32>,
    /// Fires once, on SIGTERM or SIGINT.
    pub(crate) shutdown: &'a CancellationToken,
}

/// How waiting for the token ended.
pub(crate) enum Leadership {
    /// The token is ours, the lease confirmed; the gate holds the first call
    /// until `hold_at`.
    Taken {
        /// The lease, renewed by [`keep`] and released last by [`release`]
        /// (boxed: a consumer is large).
        lease: Box<Lease>,
        /// When the first call may go (the takeover hold).
        hold_at: Instant,
        /// When the lease ends unless renewed.
        until: Instant,
    },
    /// Stopped on request while standing by.
    Shutdown,
    /// The broker connection failed.
    Lost(String),
}

fn lost(what: &str, e: &LeaseError) -> Leadership {
    Leadership::Lost(match e {
        LeaseError::Broker(b) => format!("{what}: {}", describe(b)),
        other => format!("{what}: {other}"),
    })
}

/// Waits for the leadership token, as a standby holding no deliveries; once
/// it comes, takes what the previous holder left, holds the gate until the
/// previous holder's lease and window are over (`leadership::takeover_hold`),
/// and confirms the lease with a first renewal.
pub(crate) async fn take(seat: &Seat<'_>, conn: &Connection, publisher: &Publisher) -> Leadership {
    let names = seat.names;
    let tag = format!("{}-lease", seat.connection_name);
    let mut lease = match broker::subscribe(conn, publisher, &names.leader, &tag).await {
        Ok(l) => l,
        Err(e) => return lost("leadership lease", &e),
    };
    let standby = tokio::time::sleep(leadership::STANDBY_AFTER);
    tokio::pin!(standby);
    let mut standing_by = false;
    loop {
        tokio::select! {
            got = lease.receive() => match got {
                Ok(()) => break,
                Err(e) => return lost("leadership lease", &e),
            },
            _ = &mut standby, if !standing_by => {
                standing_by = true;
                seat.shard.set_standby(true);
                crate::metrics::active(&names.shard, false);
                tracing::info!(shard = %names.shard, lease = %names.leader, role = "standby", "another worker holds the leadership lease; standing by, holding no deliveries");
            }
            _ = seat.shutdown.cancelled() => return Leadership::Shutdown,
        }
    }
    // The token is ours. The previous holder may call until its lease ends;
    // what it left says whether it released earlier.
    let activated = Instant::now();
    let record = match lease.take_record(names).await {
        Ok(r) => r,
        Err(e) => return Leadership::Lost(format!("leader record: {}", describe(&e))),
    };
    let now_ms = leadership::now_ms();
    let (hold_ms, reason) = leadership::takeover_hold(record, now_ms);
    let hold_at = leadership::instant_of(hold_ms, now_ms).min(activated + leadership::MAX_HOLD);
    let apps = &seat.apps;
    seat.gate.hold_apps_until(apps, hold_at);
    let until = match renew(&mut lease, publisher).await {
        Ok(until) => until,
        Err(why) => return Leadership::Lost(why),
    };
    seat.gate.lease_apps_until(apps, Some(until));
    if let Err(e) = broker::write_record(
        publisher,
        names,
        Record::Active {
            at_ms: leadership::now_ms(),
        },
    )
    .await
    {
        return Leadership::Lost(format!("leader record: {e}"));
    }
    seat.shard.set_standby(false);
    crate::metrics::active(&names.shard, true);
    crate::metrics::takeover(reason.as_str());
    tracing::info!(
        shard = %names.shard,
        lease = %names.leader,
        role = "active",
        first_call_in_ms = hold_at.saturating_duration_since(Instant::now()).as_millis() as u64,
        hold = reason.as_str(),
        "took the leadership lease; this worker is active"
    );
    Leadership::Taken {
        lease: Box::new(lease),
        hold_at,
        until,
    }
}

/// One renewal: sends it, and waits for the token to come back within the
/// lease. Returns the new end of the lease, counted from the send.
async fn renew(lease: &mut Lease, publisher: &Publisher) -> Result<Instant, String> {
    let sent = Instant::now();
    let round = async {
        lease.send_renewal(publisher, RENEW_INTERVAL).await?;
        lease.receive().await
    };
    match tokio::time::timeout(LEASE, round).await {
        Ok(Ok(())) => Ok(sent + LEASE),
        Ok(Err(e)) => Err(format!("leadership lease: {e}")),
        Err(_) => Err(format!(
            "leadership lease not confirmed within {} ms (broker node unreachable or stalled?)",
            LEASE.as_millis()
        )),
    }
}

/// How the lease keeper ended.
pub(crate) enum KeepEnd {
    /// Stopped on request, the lease still ours until `until`.
    Stopped {
        /// The lease, to release.
        lease: Box<Lease>,
        /// When it ends unless renewed.
        until: Instant,
    },
    /// The lease was lost: why. The gate already refuses calls.
    Lost(String),
}

/// Renews the lease every [`RENEW_INTERVAL`] until `stop`, moving the gate's
/// lease end of `apps` with each confirmed renewal. A renewal not confirmed
/// before the lease ends loses it: the gate's end stays where it was, so no
/// call starts after it, and the session ends.
pub(crate) async fn keep(
    mut lease: Box<Lease>,
    publisher: Publisher,
    gate: Gate,
    apps: Vec<u32>,
    mut until: Instant,
    stop: CancellationToken,
) -> KeepEnd {
    // The first renewal goes at once: setting up the consumers after the
    // takeover took part of the first lease already.
    let mut first = true;
    loop {
        if !first {
            tokio::select! {
                _ = stop.cancelled() => return KeepEnd::Stopped { lease, until },
                _ = tokio::time::sleep(RENEW_INTERVAL) => {}
            }
        }
        first = false;
        // A renewal may take until the lease ends, not longer.
        let round = tokio::time::timeout_at(until, renew(&mut lease, &publisher));
        match round.await {
            Ok(Ok(next)) => {
                until = next;
                gate.lease_apps_until(&apps, Some(until));
            }
            Ok(Err(why)) => return KeepEnd::Lost(why),
            Err(_) => {
                return KeepEnd::Lost(format!(
                    "leadership lease not confirmed within {} ms (broker node unreachable or stalled?); \
                     this worker stops calling and its deliveries go back",
                    LEASE.as_millis()
                ))
            }
        }
    }
}

/// The last step of a graceful stop, once every call has returned: say when
/// our window frees, then let the token go. The record is written only while
/// the lease is ours, and is true whatever happens after: no call follows it.
pub(crate) async fn release(
    seat: &Seat<'_>,
    lease: Box<Lease>,
    until: Instant,
    publisher: &Publisher,
    hold_at: Instant,
) {
    if Instant::now() >= until {
        tracing::warn!("the leadership lease ran out during the stop; the next worker waits a full hold");
        return;
    }
    let now = leadership::now_ms();
    let last = seat
        .gate
        .last_call_of(&seat.apps)
        .map_or(now, |t| leadership::ms_of(t + WINDOW, now));
    let free_at_ms = last.max(leadership::ms_of(hold_at, now));
    let release = broker::write_record(publisher, seat.names, Record::Released { free_at_ms });
    match tokio::time::timeout(CLOSE_STEP, release).await {
        Ok(Ok(())) => {
            let _ = tokio::time::timeout(CLOSE_STEP, lease.release()).await;
            tracing::info!(shard = %seat.names.shard, free_in_ms = (free_at_ms - now).max(0), "released the leadership lease");
        }
        _ => tracing::warn!("could not write the release record; the next worker waits a full hold"),
    }
}

/// Keeps the active worker's record fresh (every [`REFRESH_INTERVAL`]) until
/// `stop`: it says "active, not released", and overwrites within one
/// interval a release record of a previous holder that landed after this
/// worker took the token. While a broker alarm blocks publishing it waits;
/// the lease needs no publish, so the worker stays active.
pub(crate) async fn refresh_record(publisher: Publisher, names: crate::amqp::topology::Names, stop: CancellationToken) {
    let mut beat = tokio::time::interval(REFRESH_INTERVAL);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    beat.tick().await;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = beat.tick() => {}
        }
        let record = Record::Active {
            at_ms: leadership::now_ms(),
        };
        let write = broker::write_record(&publisher, &names, record);
        tokio::select! {
            _ = stop.cancelled() => return,
            written = write => if let Err(e) = written {
                tracing::debug!("leader record not refreshed ({e}); trying again");
            }
        }
    }
}

/// How often the active worker refreshes its record.
pub(crate) const REFRESH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(250);
