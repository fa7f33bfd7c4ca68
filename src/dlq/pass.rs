//! Passes over the dead queue with `basic.get`, run under the pass lock (`super::lock`): `peek` (list)
//! re-appends every letter to the tail and removes the original once the copy is confirmed; `sweep` replays
//! or purges the matching letters and re-appends the others the same way.
//!
//! A pass reads exactly the depth the queue had when it started, so letters
//! that arrive meanwhile (workers keep dead-lettering) are left for later, and
//! the re-appended ones come back in their original relative order after them.
//! No letter is ever handed back (`nack` requeue, or a channel closed on it)
//! on the way: that would raise its delivery count, and a broker policy with
//! a low `delivery-limit` on the dead queue (the lower of policy and argument
//! wins) would then drop it. At most [`WINDOW`] letters are unacked at once,
//! each for one publish confirm, so no pass nears the consumer timeout.

use super::letter::{Filter, Letter};
use super::rewrite::{letter_reappend_properties, replay_properties};
use crate::amqp::publish::{Pending, PublishError, Publisher};
use chrono::Utc;
use lapin::options::{BasicAckOptions, BasicGetOptions};
use lapin::Acker;
use lapin::{Channel, Connection};
use std::collections::VecDeque;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Letters published and not yet settled (confirmed, then acked). Kept under
/// the 32 pending commands past which a RabbitMQ 3.x quorum-queue channel
/// stashes acks and drops them if it closes first (rabbitmq-server#10327):
/// dropped acks would leave replayed letters in the dead queue too. In
/// RabbitMQ 3.10 each ack is one settle command, pending on the channel until
/// the queue reports it applied; only once 32 are pending are further acks
/// stashed instead of sent. Each `basic.get` is a synchronous command of the
/// same queue, applied after every ack sent before it, so acks do not pile
/// up between gets, and the last `WINDOW` acks of a pass (sent in a row
/// before the channel closes) stay under 32. A larger window does not
/// speed a pass up (the gets, one queue round trip each, set the pace: 30
/// measured no faster than 16 over 20,000 letters), so the margin is kept.
pub(crate) const WINDOW: usize = 16;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PassError {
    /// The queue does not exist.
    #[error("no queue {0:?}: has a worker or producer ever run in this namespace?")]
    NoQueue(String),
    /// The channel or connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// A republish was not confirmed.
    #[error("{0}")]
    Publish(#[from] PublishError),
    /// The replay rate is refused.
    #[error("{0}")]
    Rate(#[from] RateError),
}

/// Letters in `queue`. A passive declare counts ready messages only; under
/// the pass lock that is every letter, since no other pass holds any and
/// nothing else consumes the dead queue.
pub(crate) async fn depth(conn: &Connection, queue: &str) -> Result<u32, PassError> {
    match crate::amqp::topology::inspect(conn, queue).await? {
        Some(q) => Ok(q.ready),
        None => Err(PassError::NoQueue(queue.to_owned())),
    }
}

/// What a peek saw.
#[derive(Debug)]
pub(crate) struct Peeked {
    /// Letters when it started.
    pub depth: u64,
    /// Letters read.
    pub scanned: u64,
    /// Letters that matched.
    pub matched: u64,
    /// The first matching letters, at most the limit, in queue order.
    pub letters: Vec<Letter>,
}

/// Reads every letter without consuming it, as [`peek_until`] never stopped.
pub(crate) async fn peek(
    conn: &Connection,
    queue: &str,
    filter: &Filter,
    limit: Option<usize>,
    progress: impl FnMut(u64),
) -> Result<Peeked, PassError> {
    let (peeked, end) = peek_until(conn, queue, filter, limit, &CancellationToken::new(), progress).await;
    match end {
        SweepEnd::Failed(e) => Err(e),
        _ => Ok(peeked),
    }
}

/// Reads every letter without consuming it: each is re-appended to the tail
/// (same body and properties) and removed from the head once the copy is
/// confirmed, one pass over the starting depth, so the queue ends as it began
/// (letters that arrived meanwhile now stand before the re-appended ones).
/// A crash loses nothing: at worst the letters in flight ([`WINDOW`]) are
/// left twice. Stopped through `stop`, it settles what is in flight and
/// returns `Cancelled`: the letters read are then behind the unread ones.
pub(crate) async fn peek_until(
    conn: &Connection,
    queue: &str,
    filter: &Filter,
    limit: Option<usize>,
    stop: &CancellationToken,
    mut progress: impl FnMut(u64),
) -> (Peeked, SweepEnd) {
    let cfg = SweepConfig {
        dead: queue.to_owned(),
        action: Action::Purge,
        filter: filter.clone(),
        limit: None,
        abandon_after: None,
    };
    let mut letters = Vec::new();
    let mut last = 0;
    let report = pass(
        conn,
        &cfg,
        false,
        stop,
        |letter, matches| {
            if matches && limit.is_none_or(|l| letters.len() < l) {
                letters.push(letter);
            }
        },
        |r| {
            let settled = r.kept;
            progress(settled - last);
            last = settled;
        },
    )
    .await;
    let peeked = Peeked {
        depth: report.depth,
        scanned: report.examined,
        matched: report.matched,
        letters,
    };
    (peeked, report.end)
}

/// Where a replayed letter goes: its app's shard queue when the letter's
/// job could be read and its app (or, naming none, the default app) is
/// listed, else `to`.
pub(crate) fn replay_queue<'a>(to: &'a str, by_app: &'a [(Option<u32>, String)], app: Option<Option<u32>>) -> &'a str {
    app.and_then(|a| by_app.iter().find(|(k, _)| *k == a))
        .map_or(to, |(_, q)| q.as_str())
}

/// Each app's (and, under `None`, the default app's) queue of `lane` in
/// its shard, for [`Action::Replay`]'s `by_app`: empty without shards,
/// where every letter goes to the lane's one queue.
pub(crate) fn replay_targets(
    routing: Option<&crate::config::shards::Routing>,
    names: &crate::amqp::topology::Names,
    lane: crate::amqp::topology::Lane,
) -> Vec<(Option<u32>, String)> {
    let Some(routing) = routing.filter(|r| r.is_sharded()) else {
        return Vec::new();
    };
    let mut v: Vec<(Option<u32>, String)> = routing
        .iter()
        .map(|(app, shard)| (Some(app), names.for_shard(shard).queue(lane).to_owned()))
        .collect();
    if let Some(shard) = routing.shard_for(None) {
        v.push((None, names.for_shard(shard).queue(lane).to_owned()));
    }
    v
}

async fn get(ch: &Channel, queue: &str) -> Result<Option<lapin::message::BasicGetMessage>, lapin::Error> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await
}

/// What a sweep does with a matching letter.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    /// Republish it to this queue (a lane's job queue: `{ns}.bulk` or `{ns}.requests`), at most `rate` per second.
    Replay {
        /// Destination queue.
        to: String,
        /// Most replays per second; `None` for as fast as confirms allow.
        rate: Option<f64>,
        /// With shards: the lane's queue of the shard that serves each app
        /// (`None`: the default app, for a job naming none). A letter whose
        /// app is listed goes there; any other to `to`.
        by_app: Vec<(Option<u32>, String)>,
    },
    /// Remove it.
    Purge,
}

/// A sweep's settings.
#[derive(Debug, Clone)]
pub(crate) struct SweepConfig {
    /// The dead queue.
    pub dead: String,
    /// What to do with matching letters.
    pub action: Action,
    /// Which letters match.
    pub filter: Filter,
    /// Most letters to replay or purge; the other matching ones are kept.
    pub limit: Option<u64>,
    /// Test hook: once this many letters are settled, return at once and leave
    /// those in flight unsettled, as a crash would (`SweepEnd::Abandoned`).
    pub abandon_after: Option<u64>,
}

/// How a sweep ended.
#[derive(Debug)]
pub(crate) enum SweepEnd {
    /// Every letter up to the starting depth was examined.
    Done,
    /// Stopped on request after settling what was in flight.
    Cancelled,
    /// Stopped by the test hook with letters in flight.
    Abandoned,
    /// The broker failed; the letters in flight are in doubt.
    Failed(PassError),
}

/// What a sweep did. `taken` and `kept` count settled letters: replaced (if
/// at all) by a confirmed publish, then acked.
#[derive(Debug)]
pub(crate) struct SweepReport {
    /// Ready letters when it started.
    pub depth: u64,
    /// Letters fetched.
    pub examined: u64,
    /// Letters fetched that match the filter (taken, or kept past the limit).
    pub matched: u64,
    /// Matching letters replayed or purged.
    pub taken: u64,
    /// Letters re-appended to the tail of the dead queue.
    pub kept: u64,
    /// Letters of the starting depth never fetched, left at the head in
    /// order: the limit was reached before any letter had to move, or the
    /// sweep was cancelled.
    pub unread: u64,
    /// Letters fetched but not settled when it ended: each is still in the dead
    /// queue and may also have been replayed or re-appended (a duplicate).
    pub in_flight: u64,
    /// Why it ended.
    pub end: SweepEnd,
}

struct Flight {
    confirm: Option<Pending>,
    acker: Acker,
    taken: bool,
}

/// Slowest `--rate` accepted: one replay per 100 s. Slower than that a pass
/// would hold the pass lock for hours per hundred letters; replay in smaller
/// batches instead.
pub(crate) const MIN_RATE: f64 = 0.01;
/// Fastest `--rate` accepted: 10,000 replays per second, above what one
/// confirm-windowed pass reaches, so a higher one would mean no limit.
pub(crate) const MAX_RATE: f64 = 10_000.0;

/// A `--rate` outside [`MIN_RATE`, `MAX_RATE`] (or not a number).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("--rate must be between {MIN_RATE} and {MAX_RATE} messages per second, not {0}")]
pub(crate) struct RateError(pub String);

/// The time between two replays at `rate` per second, or why the rate is refused.
pub(crate) fn replay_spacing(rate: f64) -> Result<Duration, RateError> {
    if !(MIN_RATE..=MAX_RATE).contains(&rate) {
        return Err(RateError(rate.to_string()));
    }
    Duration::try_from_secs_f64(1.0 / rate).map_err(|_| RateError(rate.to_string()))
}

/// Replays or purges the matching letters and re-appends the others, one
/// pass over the depth the queue had at the start. A letter is acked only
/// after its republish is confirmed, so an interruption at any point loses
/// nothing; at most the letters in flight ([`WINDOW`]) can be duplicated.
/// With a rate, each replay is settled (confirmed, then acked) before the
/// next letter is read, and the wait for the next replay's turn happens with
/// no letter held, so Ctrl-C (`stop`) ends it at once.
pub(crate) async fn sweep(
    conn: &Connection,
    cfg: &SweepConfig,
    stop: &CancellationToken,
    progress: impl FnMut(&SweepReport),
) -> SweepReport {
    pass(conn, cfg, true, stop, |_, _| {}, progress).await
}

/// One pass: with `act`, matching letters (up to the limit) are taken as
/// `cfg.action` says; every other letter is re-appended. `on_letter` sees
/// each letter read and whether it matches.
async fn pass(
    conn: &Connection,
    cfg: &SweepConfig,
    act: bool,
    stop: &CancellationToken,
    mut on_letter: impl FnMut(Letter, bool),
    mut progress: impl FnMut(&SweepReport),
) -> SweepReport {
    let mut report = SweepReport {
        depth: 0,
        examined: 0,
        matched: 0,
        taken: 0,
        kept: 0,
        unread: 0,
        in_flight: 0,
        end: SweepEnd::Done,
    };
    let spacing = match &cfg.action {
        Action::Replay { rate: Some(r), .. } if act => match replay_spacing(*r) {
            Ok(d) => Some(d),
            Err(e) => {
                report.end = SweepEnd::Failed(PassError::Rate(e));
                return report;
            }
        },
        _ => None,
    };
    let setup = async {
        let depth = depth(conn, &cfg.dead).await?;
        let ch = conn.create_channel().await?;
        let publisher = Publisher::open(conn).await?;
        Ok::<_, PassError>((depth, ch, publisher))
    };
    let (depth, ch, publisher) = match setup.await {
        Ok(s) => s,
        Err(e) => {
            report.end = SweepEnd::Failed(e);
            return report;
        }
    };
    report.depth = depth.into();
    let mut flights: VecDeque<Flight> = VecDeque::with_capacity(WINDOW);
    let (mut taken_sent, mut kept_sent) = (0u64, 0u64);
    let mut next_replay: Option<Instant> = None;
    let mut settled = 0u64;
    let end = 'pass: loop {
        if stop.is_cancelled() {
            report.unread = report.depth - report.examined;
            break SweepEnd::Cancelled;
        }
        if cfg.abandon_after.is_some_and(|n| settled >= n) {
            report.in_flight = flights.len() as u64;
            report.end = SweepEnd::Abandoned;
            // No close: the caller exits as a crash would.
            std::mem::forget(ch);
            return report;
        }
        if flights.len() >= WINDOW {
            if let Err(e) = settle(flights.pop_front(), &mut report).await {
                report.in_flight = flights.len() as u64 + 1;
                break SweepEnd::Failed(e);
            }
            settled += 1;
            progress(&report);
            continue;
        }
        if report.examined >= report.depth {
            break SweepEnd::Done;
        }
        let limit_reached = cfg.limit.is_some_and(|l| taken_sent >= l);
        if act && limit_reached && kept_sent == 0 {
            // Nothing was moved to the tail, so the rest can stay where it is:
            // those letters are kept too, though never read.
            report.unread = report.depth - report.examined;
            break SweepEnd::Done;
        }
        if let Some(at) = next_replay.filter(|at| *at > Instant::now()) {
            // The next replay's turn: wait for it holding no letter.
            while let Some(f) = flights.pop_front() {
                if let Err(e) = settle(Some(f), &mut report).await {
                    report.in_flight = flights.len() as u64 + 1;
                    break 'pass SweepEnd::Failed(e);
                }
                settled += 1;
                progress(&report);
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at) => {}
                _ = stop.cancelled() => continue,
            }
        }
        let m = match get(&ch, &cfg.dead).await {
            Ok(Some(m)) => m,
            Ok(None) => break SweepEnd::Done,
            Err(e) => {
                report.in_flight = flights.len() as u64;
                break SweepEnd::Failed(e.into());
            }
        };
        report.examined += 1;
        let d = m.delivery;
        let letter = Letter::read(report.examined, &d.data, d.properties.headers().as_ref());
        let app = letter.job.as_ref().map(|j| j.app_id);
        let matches = cfg.filter.matches(&letter);
        report.matched += u64::from(matches);
        on_letter(letter, matches);
        let take = act && !limit_reached && matches;
        let sent = match (&cfg.action, take) {
            (Action::Purge, true) => Ok(None),
            (Action::Replay { to, by_app, .. }, true) => {
                if let Some(spacing) = spacing {
                    next_replay = Some(Instant::now() + spacing);
                }
                let props = replay_properties(&d.properties, Utc::now());
                let to = replay_queue(to, by_app, app);
                publisher.send(to, &d.data, props).await.map(Some)
            }
            (_, false) => publisher
                .send(&cfg.dead, &d.data, letter_reappend_properties(&d.properties))
                .await
                .map(Some),
        };
        match sent {
            Ok(confirm) => {
                if take {
                    taken_sent += 1;
                } else {
                    kept_sent += 1;
                }
                flights.push_back(Flight {
                    confirm,
                    acker: d.acker,
                    taken: take,
                });
            }
            Err(e) => {
                report.in_flight = flights.len() as u64 + 1;
                break SweepEnd::Failed(e.into());
            }
        }
        if take && spacing.is_some() {
            // A paced replay is settled at once, not a window later.
            while let Some(f) = flights.pop_front() {
                if let Err(e) = settle(Some(f), &mut report).await {
                    report.in_flight = flights.len() as u64 + 1;
                    break 'pass SweepEnd::Failed(e);
                }
                settled += 1;
                progress(&report);
            }
        }
    };
    let end = match end {
        SweepEnd::Done | SweepEnd::Cancelled => {
            let mut end = end;
            while let Some(f) = flights.pop_front() {
                if let Err(e) = settle(Some(f), &mut report).await {
                    report.in_flight = flights.len() as u64 + 1;
                    end = SweepEnd::Failed(e);
                    break;
                }
                progress(&report);
            }
            end
        }
        failed => failed,
    };
    // Acks were sent in order before this close, and none was stashed (see
    // `WINDOW`), so the broker applies each before it sees the channel go;
    // the letters still unacked (any in doubt) return to the queue.
    let _ = ch.close(200, "swept".into()).await;
    let _ = publisher.channel().close(200, "swept".into()).await;
    report.end = end;
    report
}

async fn settle(flight: Option<Flight>, report: &mut SweepReport) -> Result<(), PassError> {
    let f = flight.expect("settle is called with a flight in the window");
    if let Some(confirm) = f.confirm {
        confirm.confirmed().await?;
    }
    f.acker.ack(BasicAckOptions::default()).await?;
    if f.taken {
        report.taken += 1;
    } else {
        report.kept += 1;
    }
    Ok(())
}

#[cfg(test)]
mod replay_queue_tests {
    use super::replay_queue;

    #[test]
    fn a_replay_goes_to_its_apps_shard_by_table() {
        let by_app = vec![(Some(1), "k.eu.bulk".to_owned()), (None, "k.us.bulk".to_owned())];
        // (the letter's job: unreadable, or its app_id), where it goes
        let cases: &[(Option<Option<u32>>, &str)] = &[
            (Some(Some(1)), "k.eu.bulk"),
            (Some(None), "k.us.bulk"),
            (Some(Some(9)), "k.bulk"),
            (None, "k.bulk"),
        ];
        for (app, want) in cases {
            assert_eq!(replay_queue("k.bulk", &by_app, *app), *want, "{app:?}");
        }
        assert_eq!(replay_queue("k.bulk", &[], Some(Some(1))), "k.bulk", "no shards");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_outside_the_bounds_are_refused_before_anything_is_sent() {
        let cases: &[(f64, Option<Duration>)] = &[
            (1.0, Some(Duration::from_secs(1))),
            (0.01, Some(Duration::from_secs(100))),
            (10_000.0, Some(Duration::from_micros(100))),
            (4.0, Some(Duration::from_millis(250))),
            (0.009, None),
            (1e-300, None),
            (10_000.5, None),
            (0.0, None),
            (-1.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
        ];
        for (rate, want) in cases {
            assert_eq!(replay_spacing(*rate).ok(), *want, "{rate}");
        }
    }
}
