//! Passes over the dead queue with `basic.get`: `peek` reads without consuming (nothing is acked; every letter
//! is handed back in order); `sweep` replays or purges the matching letters and re-appends the others, removing
//! each letter only after what replaces it is confirmed.
//!
//! A sweep reads exactly the depth the queue had when it started, so letters
//! that arrive meanwhile (workers keep dead-lettering) are left for later, and
//! the re-appended ones come back in their original relative order after them.

use super::letter::{Filter, Letter};
use super::rewrite::{reappend_properties, replay_properties};
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
/// dropped acks would leave replayed letters in the dead queue too.
pub const WINDOW: usize = 16;

/// Why a pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The queue does not exist.
    #[error("no queue {0:?}: has a worker or producer ever run in this namespace?")]
    NoQueue(String),
    /// The channel or connection failed.
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    /// A republish was not confirmed.
    #[error("{0}")]
    Publish(#[from] PublishError),
}

/// Ready messages in `queue`.
pub async fn depth(conn: &Connection, queue: &str) -> Result<u32, PassError> {
    match crate::amqp::topology::inspect(conn, queue).await? {
        Some(q) => Ok(q.ready),
        None => Err(PassError::NoQueue(queue.to_owned())),
    }
}

/// What a peek saw.
#[derive(Debug)]
pub struct Peeked {
    /// Ready letters when it started.
    pub depth: u64,
    /// Letters read.
    pub scanned: u64,
    /// Letters that matched.
    pub matched: u64,
    /// The first matching letters, at most the limit, in queue order.
    pub letters: Vec<Letter>,
}

/// Reads every letter without consuming it: each is fetched unacked on a
/// channel of its own, then all are handed back in the order read, so the
/// queue is as before (letters that arrived meanwhile stay behind them).
///
/// The whole depth is always read: a quorum queue serves returned messages
/// before the others, in the order returned, so handing back only a prefix
/// would move it behind letters returned earlier. Letters are handed back one
/// `basic.nack` (requeue) each rather than left to the channel close, because
/// RabbitMQ 3.10 returns a closing channel's unacked messages in hash order
/// past 32 of them, and drops acks and nacks still queued in a closing channel
/// (rabbitmq-server#10327): so at most [`WINDOW`] nacks are outstanding, each
/// batch awaited by watching the queue's depth grow back.
pub async fn peek(
    conn: &Connection,
    queue: &str,
    filter: &Filter,
    limit: Option<usize>,
    mut progress: impl FnMut(u64),
) -> Result<Peeked, PassError> {
    let depth_at_start = u64::from(depth(conn, queue).await?);
    let ch = conn.create_channel().await?;
    let mut out = Peeked {
        depth: depth_at_start,
        scanned: 0,
        matched: 0,
        letters: Vec::new(),
    };
    let mut held: Vec<Acker> = Vec::new();
    let read = async {
        while out.scanned < depth_at_start {
            let Some(m) = get(&ch, queue).await? else { break };
            out.scanned += 1;
            progress(1);
            held.push(m.delivery.acker);
            let letter = Letter::read(out.scanned, &m.delivery.data, m.delivery.properties.headers().as_ref());
            if filter.matches(&letter) {
                out.matched += 1;
                if limit.is_none_or(|l| out.letters.len() < l) {
                    out.letters.push(letter);
                }
            }
        }
        Ok::<(), PassError>(())
    }
    .await;
    let handed_back = hand_back(conn, queue, &held).await;
    // Whatever is still unacked (only after a failure) returns on close.
    let _ = ch.close(200, "peeked".into()).await;
    read?;
    handed_back?;
    Ok(out)
}

/// Longest wait for one batch of handed-back letters to show in the depth;
/// past it the pass goes on (a concurrent consumer can hide the growth), at
/// worst leaving those letters to the channel close.
const HAND_BACK_WAIT: Duration = Duration::from_secs(5);

/// Returns `held` to the head of `queue`, in order, [`WINDOW`] at a time.
async fn hand_back(conn: &Connection, queue: &str, held: &[Acker]) -> Result<(), PassError> {
    let nack = lapin::options::BasicNackOptions {
        requeue: true,
        multiple: false,
    };
    let base = u64::from(depth(conn, queue).await?);
    let mut returned = 0u64;
    for batch in held.chunks(WINDOW) {
        for acker in batch {
            acker.nack(nack).await?;
        }
        returned += batch.len() as u64;
        let deadline = Instant::now() + HAND_BACK_WAIT;
        while u64::from(depth(conn, queue).await?) < base + returned && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

async fn get(ch: &Channel, queue: &str) -> Result<Option<lapin::message::BasicGetMessage>, lapin::Error> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: false }).await
}

/// What a sweep does with a matching letter.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Republish it to this queue (the requests queue), at most `rate` per second.
    Replay {
        /// Destination queue.
        to: String,
        /// Most replays per second; `None` for as fast as confirms allow.
        rate: Option<f64>,
    },
    /// Remove it.
    Purge,
}

/// A sweep's settings.
#[derive(Debug, Clone)]
pub struct SweepConfig {
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
pub enum SweepEnd {
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
pub struct SweepReport {
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

/// Replays or purges the matching letters and re-appends the others, one
/// pass over the depth the queue had at the start. A letter is acked only
/// after its republish is confirmed, so an interruption at any point loses
/// nothing; at most the letters in flight ([`WINDOW`]) can be duplicated.
pub async fn sweep(
    conn: &Connection,
    cfg: &SweepConfig,
    stop: &CancellationToken,
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
    let mut next_replay = Instant::now();
    let mut settled = 0u64;
    let end = loop {
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
        if limit_reached && kept_sent == 0 {
            // Nothing was moved to the tail, so the rest can stay where it is:
            // those letters are kept too, though never read.
            report.unread = report.depth - report.examined;
            break SweepEnd::Done;
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
        let matches = cfg.filter.matches(&letter);
        report.matched += u64::from(matches);
        let take = !limit_reached && matches;
        let sent = match (&cfg.action, take) {
            (Action::Purge, true) => Ok(None),
            (Action::Replay { to, rate }, true) => {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(next_replay).await;
                    next_replay = next_replay.max(Instant::now()) + Duration::from_secs_f64(1.0 / rate);
                }
                let props = replay_properties(&d.properties, Utc::now());
                publisher.send(to, &d.data, props).await.map(Some)
            }
            (_, false) => publisher
                .send(&cfg.dead, &d.data, reappend_properties(&d.properties))
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
    // Acks were sent in order before this close; the letters still unacked
    // (any in doubt) return to the queue.
    let _ = ch.close(200, "swept".into()).await;
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
