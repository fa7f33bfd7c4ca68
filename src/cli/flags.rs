//! The flags several subcommands share: the broker and namespace (`BrokerArgs`) and the ledger's database (`DatabaseArgs`).

use crate::amqp::topology::Names;
use crate::config::{self, parse_duration, ConfigError};
use crate::ledger::Ledger;
use crate::secret::Secret;
use std::fmt;
use std::time::Duration;

/// Broker and namespace settings shared by every command that touches queues.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct BrokerArgs {
    /// RabbitMQ URL. It holds the password: prefer the environment variable,
    /// since a command line is visible to every user of the machine.
    #[arg(long = "amqp-url", env = "KICKQ_AMQP_URL", default_value = config::DEFAULT_AMQP_URL, hide_env_values = true, hide_default_value = true)]
    pub amqp_url: String,
    /// Prefix of every queue name.
    #[arg(long, env = "KICKQ_NAMESPACE", default_value = config::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// Delays of the retry queues, shortest first; attempt n waits the n-th.
    #[arg(
        long = "retry-delays",
        env = "KICKQ_RETRY_DELAYS",
        default_value = crate::amqp::topology::DEFAULT_RETRY_DELAYS.iter().map(|d| config::duration_text(*d)).collect::<Vec<_>>().join(",")
    )]
    pub retry_delays: String,
}

impl BrokerArgs {
    /// The validated URL (as a secret; each node of a comma-separated list
    /// checked) and queue names.
    pub(crate) fn resolve(&self) -> Result<(Secret, Names), ConfigError> {
        // A raw comma inside a password would split it into two "nodes",
        // and print its first half as a host:port: refuse such a list.
        if crate::amqp::connect::has_split_password(&self.amqp_url) {
            return Err(ConfigError::Invalid {
                name: "KICKQ_AMQP_URL",
                why: "a node of the list holds '@' without a scheme: write a comma inside a password as %2C".into(),
            });
        }
        for node in crate::amqp::connect::nodes(&self.amqp_url) {
            let url = url::Url::parse(&node).map_err(|e| ConfigError::Invalid {
                name: "KICKQ_AMQP_URL",
                why: format!("{e} (node {})", crate::amqp::connect::host_of(&node)),
            })?;
            if !matches!(url.scheme(), "amqp" | "amqps") {
                return Err(ConfigError::Invalid {
                    name: "KICKQ_AMQP_URL",
                    why: format!("scheme must be amqp or amqps, not {}", url.scheme()),
                });
            }
        }
        validate_namespace(&self.namespace)?;
        let delays = parse_delays(&self.retry_delays)?;
        Ok((Secret::new(self.amqp_url.clone()), Names::new(&self.namespace, &delays)))
    }
}

/// Environment variable holding the ledger's PostgreSQL URL.
pub(crate) const DATABASE_URL_ENV: &str = "DATABASE_URL";

/// Where the audit ledger lives. The URL may hold a password, so `--help`
/// never shows the environment value, `Debug` redacts it, and nothing prints
/// it except through [`DatabaseArgs::display_url`].
#[derive(Clone, clap::Args)]
pub(crate) struct DatabaseArgs {
    /// PostgreSQL URL of the audit ledger, e.g. postgres://kickq@db:5432/kickq.
    /// Prefer the environment variable: argv is visible to every user through `ps`.
    #[arg(long = "database-url", env = DATABASE_URL_ENV, hide_env_values = true, value_name = "URL")]
    pub database_url: Option<String>,
}

impl fmt::Debug for DatabaseArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseArgs")
            .field(
                "database_url",
                &self.database_url.as_deref().map(crate::config::redact_url),
            )
            .finish()
    }
}

impl DatabaseArgs {
    /// The URL, or the one-line "DATABASE_URL is required" error.
    pub(crate) fn url(&self) -> Result<&str, ConfigError> {
        self.database_url
            .as_deref()
            .filter(|u| !u.trim().is_empty())
            .ok_or(ConfigError::Missing(DATABASE_URL_ENV))
    }

    /// The URL without password or query string (which may carry one), for
    /// messages; empty when no URL is set.
    pub(crate) fn display_url(&self) -> String {
        self.database_url
            .as_deref()
            .map(crate::config::redact_url)
            .unwrap_or_default()
    }

    /// A ledger handle for the URL. Connects lazily: an unreachable database
    /// shows up as an error from the first statement.
    pub(crate) async fn ledger(&self) -> anyhow::Result<Ledger> {
        Ok(Ledger::connect(self.url()?).await?)
    }

    /// A ledger handle that is known to answer and to be migrated, for the
    /// commands that read or prune it. Errors name the database (without a
    /// password) and the fix.
    pub(crate) async fn ready_ledger(&self) -> anyhow::Result<Ledger> {
        let ledger = self.ledger().await?;
        let at = self.display_url();
        match ledger.pending_migrations().await {
            Ok(pending) if pending.is_empty() => Ok(ledger),
            Ok(pending) => anyhow::bail!(
                "the ledger at {at} is not migrated ({} migration(s) pending): run `kickq migrate` (or start `kickq run`, which migrates)",
                pending.len()
            ),
            Err(e) if e.is_unavailable() => anyhow::bail!("cannot reach PostgreSQL at {at} (DATABASE_URL): {e}"),
            Err(e) => anyhow::bail!("the ledger at {at} (DATABASE_URL): {e}"),
        }
    }
}

/// A namespace is a queue-name prefix: short, and free of characters that
/// need quoting in `rabbitmqctl` or the management UI.
pub(crate) fn validate_namespace(ns: &str) -> Result<(), ConfigError> {
    let ok = !ns.is_empty()
        && ns.len() <= 100
        && ns
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            name: "KICKQ_NAMESPACE",
            why: "use 1 to 100 of A-Z a-z 0-9 . _ -".into(),
        })
    }
}

pub(crate) fn parse_delays(raw: &str) -> Result<Vec<Duration>, ConfigError> {
    let delays: Result<Vec<Duration>, String> = raw.split(',').map(|s| parse_duration(s.trim())).collect();
    let delays = delays.map_err(|why| ConfigError::Invalid {
        name: "KICKQ_RETRY_DELAYS",
        why,
    })?;
    if delays.is_empty() || delays.iter().any(|d| d.is_zero()) {
        return Err(ConfigError::Invalid {
            name: "KICKQ_RETRY_DELAYS",
            why: "give at least one delay, none of them zero".into(),
        });
    }
    Ok(delays)
}
