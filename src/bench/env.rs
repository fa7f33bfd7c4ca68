//! The bench's environment: its own AppIds and secrets, its settings (broker, database, rate, scale, apps), and the
//! namespaces and databases it creates, each deleted at the end of its scenario and again by [`BenchEnv::cleanup`].

use super::error::BenchError;
use crate::amqp::connect::connect;
use crate::amqp::topology::{self, Names, DEFAULT_DELIVERY_LIMIT};
use crate::config::Credentials;
use crate::mock_zego::{MockApp, MockConfig, MockZego};
use crate::secret::Secret;
use crate::worker::WorkerConfig;
use lapin::Connection;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

/// The AppId the bench signs for and its mock knows (no real app has it).
pub const BENCH_APP_ID: u32 = 4_000_000_001;
/// The ServerSecret of [`BENCH_APP_ID`], shared by the bench's workers and its mock.
pub const BENCH_SECRET: &str = "bench0bench1bench2bench3bench4be";
/// Retry delays of a bench namespace: two delay queues are enough, since the
/// strict mock with no faults only answers 0 (and 206 past its limit).
pub const BENCH_RETRY_DELAYS: &[Duration] = &[Duration::from_secs(1), Duration::from_secs(5)];

/// What every scenario needs to know.
#[derive(Debug, Clone)]
pub struct BenchSettings {
    /// The broker.
    pub amqp_url: Secret,
    /// Prefix of the bench's namespaces.
    pub namespace_prefix: String,
    /// A PostgreSQL URL the bench may create and drop databases through; `None` skips the ledger run.
    pub database_url: Option<Secret>,
    /// The API limit L (calls per second), for the mock and the workers alike.
    pub rate: u32,
    /// Fraction of each scenario's full size (1.0 is the size).
    pub scale: f64,
    /// The `kickq` binary run as a child (backlog, enqueue, apps); `None` skips those scenarios.
    pub exe: Option<PathBuf>,
    /// Apps of the apps scenario, each at `rate` (`--apps`).
    pub apps: usize,
}

/// The credentials of the bench's app number `i` (0-based): app 0 is
/// [`BENCH_APP_ID`] with [`BENCH_SECRET`]; app `i` is the AppId `i` above it,
/// with a secret of its own (32 characters, as the vendor's are).
pub fn app_credentials(i: usize) -> Credentials {
    if i == 0 {
        return Credentials {
            app_id: BENCH_APP_ID,
            secret: Secret::new(BENCH_SECRET),
        };
    }
    Credentials {
        app_id: BENCH_APP_ID + u32::try_from(i).expect("fewer apps than AppIds"),
        secret: Secret::new(format!("benchapp{i:024}")),
    }
}

/// The settings plus everything created so far that still has to be deleted.
#[derive(Debug)]
pub struct BenchEnv {
    settings: BenchSettings,
    namespaces: Mutex<Vec<Names>>,
    databases: Mutex<Vec<String>>,
}

impl BenchEnv {
    /// An environment with nothing created yet.
    pub fn new(settings: BenchSettings) -> Self {
        Self {
            settings,
            namespaces: Mutex::default(),
            databases: Mutex::default(),
        }
    }

    /// The settings.
    pub fn settings(&self) -> &BenchSettings {
        &self.settings
    }

    /// `n` scaled, at least `min`.
    pub fn scaled(&self, n: usize, min: usize) -> usize {
        ((n as f64 * self.settings.scale).round() as usize).max(min)
    }

    /// A new broker connection named for the bench.
    pub async fn connect(&self, role: &str) -> Result<Connection, BenchError> {
        Ok(connect(
            &self.settings.amqp_url,
            &format!("kickq-bench-{role}-{}", std::process::id()),
        )
        .await?)
    }

    /// Creates a unique namespace, declares its topology, and remembers it for cleanup.
    pub async fn namespace(&self, tag: &str) -> Result<Names, BenchError> {
        let ns = format!(
            "{}-bench-{tag}-{}-{:04x}",
            self.settings.namespace_prefix,
            std::process::id(),
            rand::random::<u16>()
        );
        let names = Names::new(&ns, BENCH_RETRY_DELAYS);
        lock(&self.namespaces).push(names.clone());
        let conn = self.connect("setup").await?;
        let ch = conn.create_channel().await?;
        let declared = topology::declare(&ch, &names, DEFAULT_DELIVERY_LIMIT).await;
        crate::amqp::connect::close(&conn, "bench setup done").await;
        declared?;
        Ok(names)
    }

    /// Deletes a namespace's queues and forgets it.
    pub async fn delete_namespace(&self, names: &Names) -> Result<(), BenchError> {
        let conn = self.connect("cleanup").await?;
        let ch = conn.create_channel().await?;
        let deleted = topology::delete_all(&ch, names).await;
        crate::amqp::connect::close(&conn, "bench cleanup done").await;
        deleted?;
        lock(&self.namespaces).retain(|n| n != names);
        Ok(())
    }

    /// Runs `f` in a fresh namespace, and deletes the namespace afterwards
    /// whether `f` succeeded or not.
    pub async fn scoped<T, F, Fut>(&self, tag: &str, f: F) -> Result<T, BenchError>
    where
        F: FnOnce(Names) -> Fut,
        Fut: Future<Output = Result<T, BenchError>>,
    {
        let names = self.namespace(tag).await?;
        let result = f(names.clone()).await;
        let deleted = self.delete_namespace(&names).await;
        let value = result?;
        deleted?;
        Ok(value)
    }

    /// Starts the strict mock on a free loopback port with the bench's AppId;
    /// `rate_limit` 0 is unlimited.
    pub async fn mock(&self, rate_limit: u32) -> Result<MockZego, BenchError> {
        MockZego::start(
            MockConfig {
                app_id: BENCH_APP_ID,
                secret: Secret::new(BENCH_SECRET),
                apps: Vec::new(),
                rate_limit,
                faults: Vec::new(),
                clock_offset_secs: 0,
                id_charset: crate::job::IdCharset::Vendor,
                distance: Default::default(),
            },
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .map_err(BenchError::Mock)
    }

    /// Starts the strict mock serving `n` AppIds ([`app_credentials`] 0 to
    /// `n - 1`), each with its own window of `rate_limit` (0: unlimited).
    pub async fn mock_apps(&self, rate_limit: u32, n: usize) -> Result<MockZego, BenchError> {
        let first = app_credentials(0);
        MockZego::start(
            MockConfig {
                app_id: first.app_id,
                secret: first.secret,
                apps: (1..n)
                    .map(|i| {
                        let c = app_credentials(i);
                        MockApp {
                            app_id: c.app_id,
                            secret: c.secret,
                        }
                    })
                    .collect(),
                rate_limit,
                faults: Vec::new(),
                clock_offset_secs: 0,
                id_charset: crate::job::IdCharset::Vendor,
                distance: Default::default(),
            },
            std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        )
        .await
        .map_err(BenchError::Mock)
    }

    /// A fresh, empty database, remembered for cleanup; its URL. `Ok(None)`
    /// when the bench has no database URL.
    pub async fn create_database(&self) -> Result<Option<Secret>, BenchError> {
        let Some(admin) = &self.settings.database_url else {
            return Ok(None);
        };
        let name = format!("kickq_bench_{}_{:04x}", std::process::id(), rand::random::<u16>());
        let pool = sqlx::PgPool::connect(admin.expose()).await?;
        let created = sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await;
        pool.close().await;
        created?;
        lock(&self.databases).push(name.clone());
        let mut url = url::Url::parse(admin.expose()).map_err(|e| sqlx::Error::Configuration(Box::new(e)))?;
        url.set_path(&format!("/{name}"));
        Ok(Some(Secret::new(url.to_string())))
    }

    /// Drops every database this environment created.
    pub async fn drop_databases(&self) -> Result<(), BenchError> {
        let names: Vec<String> = std::mem::take(&mut *lock(&self.databases));
        let Some(admin) = &self.settings.database_url else {
            return Ok(());
        };
        if names.is_empty() {
            return Ok(());
        }
        let pool = sqlx::PgPool::connect(admin.expose()).await?;
        for name in names {
            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .execute(&pool)
                .await?;
        }
        pool.close().await;
        Ok(())
    }

    /// Deletes whatever is still registered (after an error or an interrupt).
    pub async fn cleanup(&self) -> Result<(), BenchError> {
        let left: Vec<Names> = lock(&self.namespaces).clone();
        for names in &left {
            self.delete_namespace(names).await?;
        }
        self.drop_databases().await
    }

    /// The in-process kickq worker's configuration: the product's defaults,
    /// with the bench's credentials, namespace, API and rate.
    pub fn worker_config(&self, names: &Names, api_url: &str, rate: u32) -> WorkerConfig {
        WorkerConfig::new(
            self.settings.amqp_url.clone(),
            names.clone(),
            Credentials {
                app_id: BENCH_APP_ID,
                secret: Secret::new(BENCH_SECRET),
            },
        )
        .with_connection_name(format!("kickq-bench-worker-{}", names.namespace))
        .with_api_url(api_url)
        .with_rate(rate)
    }
}

/// `KICKQ_RETRY_DELAYS` for a child working in `names`, so that it declares
/// exactly the namespace's queues (and cleanup deletes everything it made).
pub fn retry_delays_setting(names: &Names) -> String {
    names
        .retry
        .iter()
        .map(|(d, _)| format!("{}ms", d.as_millis()))
        .collect::<Vec<_>>()
        .join(",")
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_app_has_its_own_app_id_and_secret() {
        assert_eq!(app_credentials(0).app_id, BENCH_APP_ID);
        assert_eq!(app_credentials(0).secret.expose(), BENCH_SECRET);
        let ids: std::collections::BTreeSet<u32> = (0..50).map(|i| app_credentials(i).app_id).collect();
        assert_eq!(ids.len(), 50);
        let secrets: std::collections::BTreeSet<String> =
            (0..50).map(|i| app_credentials(i).secret.expose().to_owned()).collect();
        assert_eq!(secrets.len(), 50);
        assert!(secrets.iter().all(|s| s.len() == 32), "{secrets:?}");
    }
}
