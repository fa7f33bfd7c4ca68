//! `kickq run --print-config`: the merged, validated configuration as TOML in the config file's own shape,
//! with every secret redacted (passwords in URLs; a ServerSecret shows only where it is read from).

use crate::worker::WorkerConfig;
use std::time::Duration;

/// What `--print-config` prints: every setting under its config-file key,
/// and the apps with where each secret is read from.
pub(crate) fn render(cfg: &WorkerConfig) -> String {
    let mut t = toml::Table::new();
    let mut put = |k: &str, v: toml::Value| {
        t.insert(k.to_owned(), v);
    };
    let s = |v: &str| toml::Value::String(v.to_owned());
    // A URL encodes the brackets of the redaction mark; the printout shows it plain.
    let url = |v: &str| toml::Value::String(crate::config::redact_url(v));
    let n = |v: u64| toml::Value::Integer(v as i64);
    let d = |v: Duration| toml::Value::String(duration(v));
    put("amqp_url", url(cfg.amqp_url.expose()));
    put("namespace", s(&cfg.names.namespace));
    put(
        "retry_delays",
        toml::Value::Array(cfg.names.retry.iter().map(|(delay, _)| d(*delay)).collect()),
    );
    put("prefetch", n(cfg.prefetch.into()));
    // The prefetch in use: the configured one, bounded as the run bounds it.
    put("bulk_prefetch", n(cfg.effective_bulk_prefetch().into()));
    put("max_users_per_message", n(cfg.limits.max_users_per_message as u64));
    put("id_charset", s(&cfg.limits.id_charset.to_string()));
    put("delivery_limit", n(cfg.delivery_limit.into()));
    put("max_attempts", n(cfg.budget.max_attempts.into()));
    put("max_rate_limited", n(cfg.budget.max_rate_limited.into()));
    put("max_retry_age", d(cfg.budget.max_age));
    put("max_in_flight", n(cfg.max_in_flight as u64));
    put("probe_interval", d(cfg.probe_interval));
    put("max_hold", d(cfg.coalescer.max_hold));
    put("linger", d(cfg.coalescer.policy.linger));
    put("max_group_wait", d(cfg.coalescer.policy.max_wait));
    put("drain_deadline", d(cfg.coalescer.drain_deadline));
    put("http_timeout", d(cfg.http_timeout));
    put("dedupe_window", d(cfg.dedupe_window));
    put("connection_name", s(&cfg.connection_name));
    put(
        "metrics_addr",
        s(&cfg.metrics_addr.map_or("0".to_owned(), |a| a.to_string())),
    );
    put("events", s(if cfg.events { "on" } else { "off" }));
    if let Some(intake) = &cfg.http_intake {
        put("http_intake_addr", s(&intake.addr.to_string()));
        put("http_intake_token_file", s(&intake.token_file.display().to_string()));
        put("http_intake_max_bytes", n(intake.max_bytes as u64));
        put("http_intake_rate", n(intake.rate.into()));
    }
    if let Some(console) = &cfg.console {
        put("console_addr", s(&console.addr.to_string()));
        put("console_token_file", s(&console.token_file.display().to_string()));
        if let Some(m) = &console.management_url {
            put("management_url", url(m.expose()));
        }
    }
    if let Some(db) = &cfg.database_url {
        put("database_url", url(db.expose()));
    }
    let apps: Vec<toml::Value> = cfg
        .apps
        .iter()
        .map(|a| {
            let mut app = toml::Table::new();
            app.insert("app_id".into(), n(a.app_id().into()));
            match &a.secret_source {
                crate::config::apps::SecretSource::Env(name) => {
                    app.insert("secret_env".into(), s(name));
                }
                crate::config::apps::SecretSource::File(path) => {
                    app.insert("secret_file".into(), s(&path.display().to_string()));
                }
                crate::config::apps::SecretSource::Given => {}
            }
            app.insert("rate".into(), n(a.rate.into()));
            app.insert("api_url".into(), s(&a.api_url));
            app.insert(
                "default".into(),
                toml::Value::Boolean(cfg.apps.default_app() == Some(a.app_id())),
            );
            if !a.shard.is_default() {
                app.insert("shard".into(), s(a.shard.as_str()));
            }
            toml::Value::Table(app)
        })
        .collect();
    t.insert("apps".into(), toml::Value::Array(apps));
    // The shards this worker serves, when any is named (the apps above are
    // theirs; the config's other shards' apps are not served here).
    if cfg.shards().iter().any(|s| !s.is_default()) {
        let shards = cfg.shards().iter().map(|x| s(x.as_str())).collect();
        t.insert("shards".into(), toml::Value::Array(shards));
    }
    let body = toml::to_string(&t).expect("a table of strings, numbers and arrays always serializes");
    format!("# kickq run --print-config: merged from the config file, the environment and the flags; secrets redacted\n{body}")
}

/// `250ms`, `30s`, `15m`, `2h`: what the flags accept.
fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".into(),
        _ if !ms.is_multiple_of(1000) => format!("{ms}ms"),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ => format!("{}s", ms / 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::apps::{AppConfig, SecretSource};
    use crate::config::Credentials;
    use crate::secret::Secret;
    use crate::worker::Names;

    #[test]
    fn secrets_are_redacted_and_the_output_is_the_file_shape() {
        let secret = "s3cr3t-0123456789abcdef012345678";
        let cfg = WorkerConfig::new(
            Secret::new("amqp://kickq:broker-pw-77@10.0.0.1:5672/%2f"),
            Names::new("kq", &[Duration::from_secs(1), Duration::from_millis(1500)]),
            Credentials {
                app_id: 11,
                secret: Secret::new(secret),
            },
        )
        .with_app(AppConfig {
            secret_source: SecretSource::File("/run/secrets/zego-games".into()),
            rate: 20,
            ..AppConfig::new(Credentials {
                app_id: 22,
                secret: Secret::new(secret),
            })
        })
        .with_ledger(Secret::new("postgres://kickq:db-pw-88@db/kickq"));
        let out = render(&cfg);
        for hidden in [secret, "broker-pw-77", "db-pw-88"] {
            assert!(!out.contains(hidden), "{hidden} printed:\n{out}");
        }
        assert!(out.contains("[redacted]"), "{out}");
        let back: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
        assert_eq!(back["namespace"].as_str(), Some("kq"));
        assert_eq!(back["retry_delays"].as_array().unwrap().len(), 2);
        assert_eq!(back["retry_delays"][1].as_str(), Some("1500ms"));
        let apps = back["apps"].as_array().unwrap();
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[1]["secret_file"].as_str(), Some("/run/secrets/zego-games"));
        assert_eq!(apps[1]["rate"].as_integer(), Some(20));
        assert_eq!(
            apps[0]["default"].as_bool(),
            Some(true),
            "the only app of `new` is the default"
        );
        assert_eq!(apps[1]["default"].as_bool(), Some(false));
    }

    #[test]
    fn durations_print_as_the_flags_take_them() {
        for (d, want) in [
            (0, "0ms"),
            (250, "250ms"),
            (30_000, "30s"),
            (900_000, "15m"),
            (7_200_000, "2h"),
            (1_500, "1500ms"),
        ] {
            assert_eq!(duration(Duration::from_millis(d)), want);
        }
    }
}
