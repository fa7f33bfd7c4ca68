//! Everything the console shows, read from where `/status`, `/metrics` and the CLI read it: the worker's
//! `Health`, gate and in-process call series; the broker (queue depths, leadership locks, consumers; the
//! management API's connection list when `KICKQ_MANAGEMENT_URL` is set); the dead letters through the dlq
//! passes and their lock; the ledger. The console keeps nothing of its own but its sessions.

use crate::amqp::connect::connect;
use crate::amqp::topology::{Lane, Names};
use crate::config::shards::{Routing, ShardName};
use crate::dlq::letter::Filter;
use crate::dlq::pass::{peek_until, sweep, Action, Peeked, SweepConfig, SweepEnd, SweepReport};
use crate::health::Health;
use crate::ledger::{HistoryQuery, HistoryRow, Ledger};
use crate::ratelimit::Gate;
use crate::secret::Secret;
use lapin::Connection;
use std::sync::Arc;
use std::time::Duration;

/// Time allowed for the broker's answers to one page's questions: a page
/// must come back even when the broker does not.
pub(crate) const BROKER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a page view or an action waits in line for another dlq pass (an
/// operator's `kickq dlq`, another tab) before the page says who runs it: a
/// pass over a few thousand letters takes seconds, and a browser waits that
/// long for a page.
pub(crate) const DEAD_PAGE_WAIT: Duration = Duration::from_secs(10);

/// Why a read failed: the page shows it in place of the part it could not fill.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SourceError {
    /// The broker did not answer (connect, declare, or a pass's step).
    #[error("broker: {0}")]
    Broker(String),
    /// Another dlq pass holds the lock.
    #[error("{0}")]
    Locked(String),
    /// The ledger is off (no DATABASE_URL).
    #[error("the ledger is off: set DATABASE_URL on the worker to keep and search history")]
    NoLedger,
    /// The ledger did not answer.
    #[error("ledger: {0}")]
    Ledger(#[from] crate::ledger::LedgerError),
}

/// One configured app as the console shows it.
#[derive(Debug, Clone)]
pub(crate) struct AppInfo {
    /// Its AppId.
    pub app_id: u32,
    /// Its calls per second.
    pub rate: u32,
    /// The shard that serves it.
    pub shard: ShardName,
    /// Whether this worker serves its shard.
    pub served_here: bool,
}

/// One shard's queues as a passive declare sees them (`None`: absent).
#[derive(Debug, Clone, Default)]
pub(crate) struct ShardQueues {
    /// The shard.
    pub shard: String,
    /// Messages ready in the live lane's queue.
    pub live: Option<u32>,
    /// Messages ready in the bulk lane's queue.
    pub bulk: Option<u32>,
    /// Messages waiting in every delay queue of both lanes.
    pub retry: u32,
    /// Consumers of the live queue and of the bulk queue.
    pub consumers: (u32, u32),
    /// Whether its leadership lock is held.
    pub lock_held: bool,
}

/// The broker's view of the namespace.
#[derive(Debug, Clone, Default)]
pub(crate) struct Queues {
    /// Each shard's queues.
    pub shards: Vec<ShardQueues>,
    /// Letters in the dead queue.
    pub dead: Option<u32>,
}

/// What the pages read from.
pub(crate) struct Source {
    /// The worker's state.
    pub health: Arc<Health>,
    /// The worker's budgets (halts, slow-downs).
    pub gate: Gate,
    /// The namespace's queue names (the default shard's).
    pub names: Names,
    /// Which shard serves each app.
    pub routing: Routing,
    /// The configured apps.
    pub apps: Vec<AppInfo>,
    amqp_url: Secret,
    ledger: Option<Ledger>,
    management: Option<Secret>,
    broker: tokio::sync::Mutex<Option<Connection>>,
    connection_name: String,
}

/// What the console reads from: the worker's state, its broker and its ledger ([`Source::new`]).
pub(crate) struct Parts {
    /// What the worker reports.
    pub health: Arc<Health>,
    /// The per-AppId budgets (halts, slow-downs).
    pub gate: Gate,
    /// The queue names of the deployment.
    pub names: Names,
    /// Which shard serves each app.
    pub routing: Routing,
    /// The apps of the deployment, those served here first.
    pub apps: Vec<AppInfo>,
    /// The broker (a secret).
    pub amqp_url: Secret,
    /// The ledger, if on.
    pub ledger: Option<Ledger>,
    /// The management API's URL (a secret), for the workers page.
    pub management: Option<Secret>,
    /// The console's own broker connection name.
    pub connection_name: String,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("namespace", &self.names.namespace)
            .field("apps", &self.apps)
            .finish_non_exhaustive()
    }
}

fn broker_err(e: impl std::fmt::Display) -> SourceError {
    SourceError::Broker(e.to_string())
}

impl Source {
    /// The console's reads of this worker, its broker and ledger.
    pub(crate) fn new(parts: Parts) -> Source {
        let Parts {
            health,
            gate,
            names,
            routing,
            apps,
            amqp_url,
            ledger,
            management,
            connection_name,
        } = parts;
        Source {
            health,
            gate,
            names,
            routing,
            apps,
            amqp_url,
            ledger,
            management,
            broker: tokio::sync::Mutex::new(None),
            connection_name,
        }
    }

    /// Whether the ledger is on.
    pub(crate) fn has_ledger(&self) -> bool {
        self.ledger.is_some()
    }

    /// The shards of the deployment, in order.
    pub(crate) fn shards(&self) -> Vec<ShardName> {
        self.routing.shards()
    }

    /// Depths, consumers and locks of every shard's queues, and the dead
    /// queue's depth: passive declares on the console's own connection
    /// (opened on first use, again after a failure).
    pub(crate) async fn queues(&self) -> Result<Queues, SourceError> {
        let mut guard = self.broker.lock().await;
        let read = async {
            if guard.as_ref().is_none_or(|c| !c.status().connected()) {
                *guard = Some(
                    connect(&self.amqp_url, &self.connection_name)
                        .await
                        .map_err(|e| broker_err(crate::amqp::connect::describe(&e)))?,
                );
            }
            let conn = guard.as_ref().expect("connected above");
            read_queues(conn, &self.names, &self.shards()).await.map_err(broker_err)
        };
        let got = match tokio::time::timeout(BROKER_TIMEOUT, read).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Broker(format!(
                "no answer within {}s",
                BROKER_TIMEOUT.as_secs()
            ))),
        };
        if got.is_err() {
            *guard = None;
        }
        got
    }

    /// A fresh connection for one dlq pass, waiting in line up to
    /// [`DEAD_PAGE_WAIT`] for another pass. The pass releases the lock
    /// before it closes the connection.
    async fn pass_connection(&self) -> Result<(Connection, crate::dlq::pass_lock::PassLock), SourceError> {
        let conn = connect(&self.amqp_url, &format!("{}-dlq", self.connection_name))
            .await
            .map_err(|e| broker_err(crate::amqp::connect::describe(&e)))?;
        let never = tokio_util::sync::CancellationToken::new();
        match crate::dlq::pass_lock::take(&conn, &self.names, DEAD_PAGE_WAIT, &never, |_| {}).await {
            Ok(lock) => Ok((conn, lock)),
            Err(e) => {
                crate::amqp::connect::close(&conn, "locked").await;
                Err(match e {
                    crate::dlq::pass_lock::LockError::Held(_) => SourceError::Locked(e.to_string()),
                    other => broker_err(other),
                })
            }
        }
    }

    /// The matching letters (at most `limit`, in queue order) and the counts,
    /// with `kickq dlq list`'s pass: every letter re-appended in order.
    pub(crate) async fn letters(&self, filter: &Filter, limit: usize) -> Result<Peeked, SourceError> {
        let (conn, lock) = self.pass_connection().await?;
        let (peeked, end) = peek_until(&conn, &self.names.dead, filter, Some(limit), lock.stop(), |_| {}).await;
        lock.release().await;
        crate::amqp::connect::close(&conn, "listed").await;
        match end {
            SweepEnd::Failed(e) => Err(broker_err(e)),
            _ => Ok(peeked),
        }
    }

    /// Replays or purges the matching letters, at most `limit`: `kickq dlq
    /// replay|purge`'s sweep, under the same lock.
    pub(crate) async fn sweep(
        &self,
        action: Action,
        filter: Filter,
        limit: Option<u64>,
    ) -> Result<SweepReport, SourceError> {
        let (conn, lock) = self.pass_connection().await?;
        let cfg = SweepConfig {
            dead: self.names.dead.clone(),
            action,
            filter,
            limit,
            abandon_after: None,
        };
        let report = sweep(&conn, &cfg, lock.stop(), |_| {}).await;
        lock.release().await;
        crate::amqp::connect::close(&conn, "swept").await;
        Ok(report)
    }

    /// Where a replay into `lane` sends letters: the lane's queue, or each
    /// app's shard queue of it (as `kickq dlq replay` does).
    pub(crate) fn replay_action(&self, lane: Lane) -> Action {
        Action::Replay {
            to: self.names.queue(lane).to_owned(),
            rate: None,
            by_app: crate::dlq::pass::replay_targets(Some(&self.routing), &self.names, lane),
        }
    }

    /// Ledger rows, as `kickq history` reads them.
    pub(crate) async fn history(&self, q: &HistoryQuery) -> Result<Vec<HistoryRow>, SourceError> {
        let ledger = self.ledger.as_ref().ok_or(SourceError::NoLedger)?;
        Ok(ledger.history(q).await?)
    }

    /// The broker's connections of this namespace's vhost, and who owns each
    /// shard's lock, from the management API (`None` when it is not configured).
    pub(crate) async fn fleet(&self) -> Option<Result<super::fleet::Fleet, SourceError>> {
        let base = self.management.as_ref()?;
        let shards = self.shards();
        let locks: Vec<(String, String)> = shards
            .iter()
            .map(|s| (s.to_string(), self.names.for_shard(s).leader.clone()))
            .collect();
        Some(
            super::fleet::read(base, &self.amqp_url, &self.names.namespace, &locks)
                .await
                .map_err(SourceError::Broker),
        )
    }
}

async fn read_queues(conn: &Connection, names: &Names, shards: &[ShardName]) -> Result<Queues, lapin::Error> {
    use crate::amqp::lease::lease_held;
    use crate::amqp::topology::inspect;
    let mut out = Queues::default();
    for shard in shards {
        let n = names.for_shard(shard);
        let live = inspect(conn, &n.requests).await?;
        let bulk = inspect(conn, &n.bulk).await?;
        let mut retry = 0;
        for (_, q) in n.retry.iter().chain(&n.bulk_retry) {
            retry += inspect(conn, q).await?.map_or(0, |q| q.ready);
        }
        out.shards.push(ShardQueues {
            shard: shard.to_string(),
            live: live.as_ref().map(|q| q.ready),
            bulk: bulk.as_ref().map(|q| q.ready),
            retry,
            consumers: (
                live.as_ref().map_or(0, |q| q.consumers),
                bulk.as_ref().map_or(0, |q| q.consumers),
            ),
            lock_held: lease_held(inspect(conn, &n.leader).await?),
        });
    }
    out.dead = inspect(conn, &names.dead).await?.map(|q| q.ready);
    Ok(out)
}
