//! `kickq run`: the worker's flags and environment variables, validated into a `WorkerConfig`.

use super::flags::BrokerArgs;
use crate::amqp::topology::DEFAULT_DELIVERY_LIMIT;
use crate::coalesce::{Policy, DEFAULT_DENSE_LINGER, DEFAULT_LINGER, DEFAULT_MAX_WAIT};
use crate::config::apps::Apps;
use crate::config::file::ConfigFile;
use crate::config::{self, parse_duration, ConfigError, ZegoArgs};
use crate::job::{IdCharset, Limits, DEFAULT_MAX_USERS_PER_MESSAGE};
use crate::outcome::plan::{
    Budget, DEFAULT_MAX_ATTEMPTS, DEFAULT_MAX_RATE_LIMITED, DEFAULT_MAX_RETRY_AGE, DEFAULT_MAX_UNKNOWN_ATTEMPTS,
};
use crate::pipeline::coalescer::{
    CoalescerConfig, DEFAULT_DRAIN_DEADLINE, DEFAULT_MAX_HALTED_PENDING, DEFAULT_MAX_HOLD, DEFAULT_MAX_PENDING_USERS,
};
use crate::pipeline::dispatch::{DEFAULT_HALT_LOG_INTERVAL, DEFAULT_MAX_IN_FLIGHT};
use crate::ratelimit::DEFAULT_PROBE_INTERVAL;
use crate::secret::Secret;
use crate::worker::{IntakeConfig, WorkerConfig, DEFAULT_BULK_PREFETCH, DEFAULT_EVENTS, DEFAULT_PREFETCH};
use crate::zego::client::{DEFAULT_CONNECT_TIMEOUT, DEFAULT_HTTP_TIMEOUT};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// `kickq run`: drain the requests queue and kick.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    #[command(flatten)]
    zego: ZegoArgs,
    /// ZEGOCLOUD API base URL (regional hosts exist). https only, except http to a loopback host.
    #[arg(long = "api-url", env = "ZEGO_API_URL", default_value = config::DEFAULT_API_URL)]
    api_url: String,
    /// Calls per second per AppId, retries included (the API allows 50).
    #[arg(long, env = "KICKQ_RATE", default_value_t = config::DEFAULT_RATE)]
    rate: u32,
    /// Allow KICKQ_RATE above the vendor's documented 50 calls/s (for an app
    /// whose limit ZEGOCLOUD raised).
    #[arg(long = "allow-rate-above-documented", env = "KICKQ_ALLOW_RATE_ABOVE_DOCUMENTED", action = clap::ArgAction::SetTrue, value_parser = clap::builder::BoolishValueParser::new())]
    allow_rate_above_documented: bool,
    /// Unacked messages the broker may push to this worker (1 to 65535).
    #[arg(long, env = "KICKQ_PREFETCH", default_value_t = DEFAULT_PREFETCH)]
    prefetch: u16,
    /// Unacked bulk-lane messages the broker may push (1 to 65535); lowered
    /// at start so that a full window of 100-user messages is at most 10
    /// minutes of calls at the slowest app's rate.
    #[arg(long = "bulk-prefetch", env = "KICKQ_BULK_PREFETCH", default_value_t = DEFAULT_BULK_PREFETCH)]
    bulk_prefetch: u16,
    /// Most user ids one message may carry.
    #[arg(long = "max-users-per-message", env = "KICKQ_MAX_USERS_PER_MESSAGE", default_value_t = DEFAULT_MAX_USERS_PER_MESSAGE)]
    max_users_per_message: usize,
    /// Characters room_id and user ids may hold: vendor (ZEGOCLOUD's
    /// documented set: digits, letters and ~!@#$%^&*()_+=-`;',.<>/\) or any
    /// (every character but control characters). An id outside it is
    /// dead-lettered as validation, without a call.
    #[arg(long = "id-charset", env = "KICKQ_ID_CHARSET", value_name = "vendor|any", default_value_t = IdCharset::default(), value_parser = |s: &str| s.parse::<IdCharset>())]
    id_charset: IdCharset,
    /// Deliveries of one message before the broker dead-letters it as poison
    /// (fixed when the queue is first declared).
    #[arg(long = "delivery-limit", env = "KICKQ_DELIVERY_LIMIT", default_value_t = DEFAULT_DELIVERY_LIMIT)]
    delivery_limit: u32,
    /// Most API attempts for a user before it is dead-lettered (retries_exhausted).
    #[arg(long = "max-attempts", env = "KICKQ_MAX_ATTEMPTS", default_value_t = DEFAULT_MAX_ATTEMPTS)]
    max_attempts: u32,
    /// Most rate answers (7, 206) for a user before it is dead-lettered
    /// (retries_exhausted); they do not count as attempts.
    #[arg(long = "max-rate-limited", env = "KICKQ_MAX_RATE_LIMITED", default_value_t = DEFAULT_MAX_RATE_LIMITED)]
    max_rate_limited: u32,
    /// Longest from a user's first attempt to giving up, time halted excluded.
    #[arg(long = "max-retry-age", env = "KICKQ_MAX_RETRY_AGE", default_value = config::duration_text(DEFAULT_MAX_RETRY_AGE), value_parser = parse_duration)]
    max_retry_age: Duration,
    /// Most calls in flight at once.
    #[arg(long = "max-in-flight", env = "KICKQ_MAX_IN_FLIGHT", default_value_t = DEFAULT_MAX_IN_FLIGHT)]
    max_in_flight: usize,
    /// Interval between probe calls while an AppId is halted.
    #[arg(long = "probe-interval", env = "KICKQ_PROBE_INTERVAL", default_value = config::duration_text(DEFAULT_PROBE_INTERVAL), value_parser = parse_duration)]
    probe_interval: Duration,
    /// Longest a halted AppId holds users before handing them back through a delay queue.
    #[arg(long = "max-hold", env = "KICKQ_MAX_HOLD", default_value = config::duration_text(DEFAULT_MAX_HOLD), value_parser = parse_duration)]
    max_hold: Duration,
    /// Pause in sparse input after which a partial call is sent (a backlog
    /// streaming in waits 20 ms instead).
    #[arg(long, env = "KICKQ_LINGER", default_value = config::duration_text(DEFAULT_LINGER), value_parser = parse_duration)]
    linger: Duration,
    /// Longest a group waits while fuller groups go first.
    #[arg(long = "max-group-wait", env = "KICKQ_MAX_GROUP_WAIT", default_value = config::duration_text(DEFAULT_MAX_WAIT), value_parser = parse_duration)]
    max_group_wait: Duration,
    /// Time allowed at shutdown to send what tokens allow; the rest returns to the queue.
    #[arg(long = "drain-deadline", env = "KICKQ_DRAIN_DEADLINE", default_value = config::duration_text(DEFAULT_DRAIN_DEADLINE), value_parser = parse_duration)]
    drain_deadline: Duration,
    /// How long the ledger's record that a job id's user is done makes a
    /// redelivery or re-send of that job id skip the user (the job id is the
    /// idempotency key within this window, like common idempotency-key
    /// windows; after it, the same job id kicks again).
    #[arg(long = "dedupe-window", env = "KICKQ_DEDUPE_WINDOW", default_value = config::duration_text(crate::ledger::DEFAULT_DEDUPE_WINDOW), value_parser = parse_dedupe_window)]
    dedupe_window: Duration,
    /// Total timeout of one API call.
    #[arg(long = "http-timeout", env = "KICKQ_HTTP_TIMEOUT", default_value = config::duration_text(DEFAULT_HTTP_TIMEOUT), value_parser = parse_duration)]
    http_timeout: Duration,
    /// Name of the broker connection (shown by rabbitmqctl and the management UI).
    #[arg(long = "connection-name", env = "KICKQ_CONNECTION_NAME")]
    connection_name: Option<String>,
    /// Address of /metrics, /healthz and /readyz; 0 turns the server off.
    #[arg(long = "metrics-addr", env = "KICKQ_METRICS_ADDR", default_value = crate::health::DEFAULT_METRICS_ADDR)]
    metrics_addr: String,
    /// Publish one outcome event per finished delivery to the `<ns>.events`
    /// topic exchange, confirmed before the ack: on or off (`--events` alone is on).
    #[arg(long, env = "KICKQ_EVENTS", value_name = "on|off", default_value = if DEFAULT_EVENTS { "on" } else { "off" }, num_args = 0..=1, default_missing_value = "on", value_parser = clap::builder::BoolishValueParser::new())]
    events: bool,
    /// Address of the HTTP intake (POST /v1/kicks); unset (the default) or 0 turns it off.
    /// Needs --http-intake-token-file.
    #[arg(long = "http-intake-addr", env = "KICKQ_HTTP_INTAKE_ADDR")]
    http_intake_addr: Option<String>,
    /// File of the HTTP intake's bearer tokens, one a line (# comments and
    /// blank lines ignored); re-read when it changes.
    #[arg(long = "http-intake-token-file", env = "KICKQ_HTTP_INTAKE_TOKEN_FILE")]
    http_intake_token_file: Option<std::path::PathBuf>,
    /// Largest body the HTTP intake accepts, in bytes (413 past it).
    #[arg(long = "http-intake-max-bytes", env = "KICKQ_HTTP_INTAKE_MAX_BYTES", default_value_t = crate::worker::DEFAULT_INTAKE_MAX_BYTES)]
    http_intake_max_bytes: usize,
    /// Requests a second each HTTP intake token may make (429 past it).
    #[arg(long = "http-intake-rate", env = "KICKQ_HTTP_INTAKE_RATE", default_value_t = crate::worker::DEFAULT_INTAKE_RATE)]
    http_intake_rate: u32,
    /// Address of the web console; unset (the default) or 0 turns it off.
    /// Needs --console-token-file (the HTTP intake's tokens never open it).
    #[arg(long = "console-addr", env = "KICKQ_CONSOLE_ADDR")]
    console_addr: Option<String>,
    /// File of the console's tokens, one a line (# comments and blank lines
    /// ignored); unset: the HTTP intake's token file.
    #[arg(long = "console-token-file", env = "KICKQ_CONSOLE_TOKEN_FILE")]
    console_token_file: Option<std::path::PathBuf>,
    /// RabbitMQ management API base URL (http://user:pass@host:15672), for the
    /// console's workers page (every worker session of each shard).
    #[arg(long = "management-url", env = "KICKQ_MANAGEMENT_URL", hide_env_values = true)]
    management_url: Option<String>,
    /// PostgreSQL URL of the audit ledger; unset runs without a ledger.
    #[arg(long = "database-url", env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Shards to serve, comma-separated (`eu,us`; `default` is the apps
    /// without a shard); unset serves every shard of the config file. Each
    /// shard has its own lock: one worker is active per shard.
    #[arg(long, env = "KICKQ_SHARDS", value_delimiter = ',')]
    shards: Vec<String>,
    /// Print the merged, validated configuration (config file, environment,
    /// flags; secrets redacted) as TOML, and exit.
    #[arg(long = "print-config")]
    print_config: bool,
}

impl RunArgs {
    /// `--shards` validated; `None` when unset (every shard).
    fn served_shards(&self) -> Result<Option<Vec<crate::config::shards::ShardName>>, ConfigError> {
        let names: Vec<&str> = self.shards.iter().map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
        if names.is_empty() {
            return Ok(None);
        }
        let mut shards = Vec::with_capacity(names.len());
        for n in names {
            let shard = crate::config::shards::ShardName::parse(n).map_err(|e| ConfigError::Invalid {
                name: "KICKQ_SHARDS",
                why: e.to_string(),
            })?;
            if !shards.contains(&shard) {
                shards.push(shard);
            }
        }
        Ok(Some(shards))
    }

    /// Validates every setting, and the config file's apps, into a [`WorkerConfig`].
    pub(crate) fn config(&self, file: Option<&ConfigFile>) -> Result<WorkerConfig, ConfigError> {
        let (amqp_url, names) = self.broker.resolve()?;
        let file_apps = file.map_or(&[][..], |f| &f.apps[..]);
        let serve = self.served_shards()?;
        let apps = Apps::resolve_serving(&self.zego, file_apps, self.rate, &self.api_url, serve.as_deref())?;
        let routing = crate::config::apps::file_routing(file)?;
        let positive = |name: &'static str, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(ConfigError::Invalid {
                    name,
                    why: "must be at least 1".into(),
                })
            }
        };
        positive("KICKQ_RATE", self.rate >= 1)?;
        for app in apps.iter() {
            if app.rate > config::DEFAULT_RATE && !self.allow_rate_above_documented {
                let why = format!(
                    "{} is above ZEGOCLOUD's documented {} calls/s for KickoutUser; if your app's limit was raised, add --allow-rate-above-documented (KICKQ_ALLOW_RATE_ABOVE_DOCUMENTED=true)",
                    app.rate,
                    config::DEFAULT_RATE
                );
                return Err(match file_apps.is_empty() {
                    true => ConfigError::Invalid {
                        name: "KICKQ_RATE",
                        why,
                    },
                    false => ConfigError::App {
                        app_id: app.app_id(),
                        why: format!("rate {why}"),
                    },
                });
            }
        }
        positive("KICKQ_PREFETCH", self.prefetch >= 1)?;
        positive("KICKQ_BULK_PREFETCH", self.bulk_prefetch >= 1)?;
        positive("KICKQ_MAX_USERS_PER_MESSAGE", self.max_users_per_message >= 1)?;
        positive("KICKQ_DELIVERY_LIMIT", self.delivery_limit >= 1)?;
        positive("KICKQ_MAX_ATTEMPTS", self.max_attempts >= 1)?;
        positive("KICKQ_MAX_RATE_LIMITED", self.max_rate_limited >= 1)?;
        positive("KICKQ_MAX_IN_FLIGHT", self.max_in_flight >= 1)?;
        positive("KICKQ_PROBE_INTERVAL", !self.probe_interval.is_zero())?;
        let metrics_addr = optional_addr("KICKQ_METRICS_ADDR", Some(&self.metrics_addr))?;
        let http_intake = self.http_intake()?;
        let console = self.console()?;
        let connection_name = self
            .connection_name
            .clone()
            .unwrap_or_else(|| format!("kickq-worker-{}-{}", hostname(), std::process::id()));
        Ok(WorkerConfig {
            connection_name,
            prefetch: self.prefetch,
            bulk_prefetch: self.bulk_prefetch,
            delivery_limit: self.delivery_limit,
            limits: Limits {
                max_users_per_message: self.max_users_per_message,
                id_charset: self.id_charset,
            },
            coalescer: CoalescerConfig {
                policy: Policy {
                    linger: self.linger,
                    dense_linger: DEFAULT_DENSE_LINGER,
                    max_wait: self.max_group_wait,
                },
                drain_deadline: self.drain_deadline,
                max_hold: self.max_hold,
                max_pending_users: DEFAULT_MAX_PENDING_USERS,
                max_halted_pending: DEFAULT_MAX_HALTED_PENDING,
            },
            budget: Budget {
                max_attempts: self.max_attempts,
                max_unknown_attempts: DEFAULT_MAX_UNKNOWN_ATTEMPTS.min(self.max_attempts),
                max_age: self.max_retry_age,
                max_rate_limited: self.max_rate_limited,
            },
            max_in_flight: self.max_in_flight,
            probe_interval: self.probe_interval,
            halt_log_interval: DEFAULT_HALT_LOG_INTERVAL.min(self.probe_interval * 2),
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            http_timeout: self.http_timeout,
            database_url: self.database_url.clone().filter(|u| !u.is_empty()).map(Secret::new),
            dedupe_window: self.dedupe_window,
            metrics_addr,
            events: self.events,
            http_intake,
            console,
            routing,
            ..WorkerConfig::for_apps(amqp_url, names, apps)
        })
    }

    /// The HTTP intake's settings: off without an address; with one, the
    /// token file is required (authentication is never off).
    fn http_intake(&self) -> Result<Option<IntakeConfig>, ConfigError> {
        let Some(addr) = optional_addr("KICKQ_HTTP_INTAKE_ADDR", self.http_intake_addr.as_deref())? else {
            return Ok(None);
        };
        let token_file = self
            .http_intake_token_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty())
            .ok_or(ConfigError::Invalid {
                name: "KICKQ_HTTP_INTAKE_TOKEN_FILE",
                why: "required when KICKQ_HTTP_INTAKE_ADDR is set: the intake never runs without authentication".into(),
            })?;
        let positive = |name: &'static str, ok: bool| match ok {
            true => Ok(()),
            false => Err(ConfigError::Invalid {
                name,
                why: "must be at least 1".into(),
            }),
        };
        positive("KICKQ_HTTP_INTAKE_MAX_BYTES", self.http_intake_max_bytes >= 1)?;
        positive("KICKQ_HTTP_INTAKE_RATE", self.http_intake_rate >= 1)?;
        Ok(Some(IntakeConfig {
            max_bytes: self.http_intake_max_bytes,
            rate: self.http_intake_rate,
            ..IntakeConfig::new(addr, token_file)
        }))
    }
}

impl RunArgs {
    /// The console's settings: off without an address; with one, a token
    /// file is required (the console is never open).
    fn console(&self) -> Result<Option<crate::worker::ConsoleConfig>, ConfigError> {
        let Some(addr) = optional_addr("KICKQ_CONSOLE_ADDR", self.console_addr.as_deref())? else {
            return Ok(None);
        };
        // The console's own tokens, never the HTTP intake's: a producer's
        // token must not purge dead letters.
        let token_file = self
            .console_token_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
            .cloned()
            .ok_or(ConfigError::Invalid {
                name: "KICKQ_CONSOLE_TOKEN_FILE",
                why: "required when KICKQ_CONSOLE_ADDR is set: the console never runs without authentication, and takes tokens of its own (an HTTP intake token never opens it)".into(),
            })?;
        Ok(Some(crate::worker::ConsoleConfig {
            addr,
            token_file,
            management_url: self
                .management_url
                .clone()
                .filter(|u| !u.trim().is_empty())
                .map(Secret::new),
        }))
    }
}

/// A listening address that may be off: unset, empty or `0` is off;
/// anything else must be host:port, else the error names the setting.
fn optional_addr(name: &'static str, raw: Option<&str>) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    match raw.map(str::trim) {
        None | Some("") | Some("0") => Ok(None),
        Some(a) => a.parse().map(Some).map_err(|_| ConfigError::Invalid {
            name,
            why: format!("{a:?} is not host:port (or 0 to turn it off)"),
        }),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "host".into())
}

/// Runs the worker until SIGTERM or SIGINT, then drains and exits.
pub(crate) async fn run(args: RunArgs, file: Option<&ConfigFile>) -> anyhow::Result<()> {
    let cfg = args.config(file)?;
    if args.print_config {
        // Validated as the run would: each app's client is built (its
        // api_url checked) before anything is printed.
        cfg.clients()?;
        print!("{}", crate::cli::print_config::render(&cfg));
        return Ok(());
    }
    for app in cfg.apps.iter().filter(|a| a.rate > config::DEFAULT_RATE) {
        tracing::warn!(
            app = app.app_id(),
            rate = app.rate,
            documented = config::DEFAULT_RATE,
            "the rate is above the vendor's documented limit, allowed by --allow-rate-above-documented; expect 206 answers if the app's limit was not raised"
        );
    }
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(shutdown.clone()));
    crate::worker::run(cfg, shutdown).await?;
    Ok(())
}

/// `--dedupe-window`: 1 minute to 365 days. Shorter would let a redelivery
/// after a crash kick again; longer is past what any redelivery needs (and
/// past what PostgreSQL's interval arithmetic is asked to carry).
fn parse_dedupe_window(raw: &str) -> Result<Duration, String> {
    let d = parse_duration(raw)?;
    let (least, most) = (Duration::from_secs(60), Duration::from_secs(365 * 86_400));
    if d < least || d > most {
        return Err(format!("{raw} is outside 1m..365d"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dedupe_window_is_bounded() {
        for (raw, ok) in [
            ("24h", true),
            ("1m", true),
            ("365d", true),
            ("59s", false),
            ("0s", false),
            ("366d", false),
        ] {
            assert_eq!(parse_dedupe_window(raw).is_ok(), ok, "{raw}");
        }
    }

    #[test]
    fn id_charset_flag() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let charset = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.run.id_charset);
        assert_eq!(charset(&["run"]).unwrap(), IdCharset::Vendor);
        assert_eq!(charset(&["run", "--id-charset", "any"]).unwrap(), IdCharset::Any);
        let err = charset(&["run", "--id-charset", "none"]).unwrap_err().to_string();
        assert!(err.contains("use vendor or any"), "{err}");
    }

    #[test]
    fn events_switch_by_table() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            run: RunArgs,
        }
        let events = |argv: &[&str]| Cli::try_parse_from(argv).map(|c| c.run.events);
        let cases: &[(&[&str], Option<bool>)] = &[
            (&["run"], Some(false)),
            (&["run", "--events"], Some(true)),
            (&["run", "--events", "on"], Some(true)),
            (&["run", "--events=off"], Some(false)),
            (&["run", "--events", "maybe"], None),
        ];
        for (argv, want) in cases {
            assert_eq!(events(argv).ok(), *want, "{argv:?}");
        }
    }

    #[test]
    fn namespaces() {
        assert!(super::super::flags::validate_namespace("kickq").is_ok());
        assert!(super::super::flags::validate_namespace("t-1.a_b").is_ok());
        for bad in ["", "a b", "a/b", "ü"] {
            assert!(super::super::flags::validate_namespace(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn delays() {
        assert_eq!(
            super::super::flags::parse_delays("1s, 250ms").unwrap(),
            vec![Duration::from_secs(1), Duration::from_millis(250)]
        );
        assert!(super::super::flags::parse_delays("0s").is_err());
        assert!(super::super::flags::parse_delays("x")
            .unwrap_err()
            .to_string()
            .starts_with("KICKQ_RETRY_DELAYS"));
    }
}
