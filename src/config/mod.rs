//! Settings shared by several subcommands, parsed once by clap and validated into types; defaults are named constants.
//!
//! `file.rs` reads the config file (settings and `[[apps]]`), `apps.rs`
//! validates the apps a worker serves; `shards` (which shard serves each app) is
//! the producer crate's, re-exported here.

pub mod apps;
pub mod file;
pub use kickq_producer::shards;

use crate::secret::Secret;
use std::path::PathBuf;
use std::time::Duration;

/// Default broker: the local RabbitMQ every developer and CI machine runs.
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
/// Default API base: ZEGOCLOUD's global endpoint; regional hosts are configuration.
pub const DEFAULT_API_URL: &str = "https://rtc-api.zego.im";
/// Default calls per second per AppId: the vendor's documented limit for KickoutUser.
pub const DEFAULT_RATE: u32 = 50;
/// Default queue-name prefix.
pub const DEFAULT_NAMESPACE: &str = "kickq";
/// Environment variable holding the ServerSecret.
pub const SECRET_ENV: &str = "ZEGO_SERVER_SECRET";
/// Environment variable naming a file that holds the ServerSecret.
pub const SECRET_FILE_ENV: &str = "ZEGO_SERVER_SECRET_FILE";
/// Length of a ServerSecret: ZEGOCLOUD issues 32-byte secrets, and its own
/// token generators (zego_server_assistant's token04, in every language)
/// refuse any other ("secret must be a 32 byte string"). A secret of another
/// length is a copy-paste mistake that would halt every call with 100000005.
pub const SECRET_BYTES: usize = 32;

/// A setting that is missing or invalid. `Display` is the one line the process
/// prints before exiting non-zero; it names the setting and never its value
/// when the setting is a secret.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required setting is absent.
    #[error("{0} is required")]
    Missing(&'static str),
    /// A setting is present but unusable.
    #[error("{name} is invalid: {why}")]
    Invalid {
        /// The setting (env var name).
        name: &'static str,
        /// What is wrong, without the value if it is a secret.
        why: String,
    },
    /// One app of the config file's `[[apps]]` is unusable.
    #[error("[[apps]] app_id {app_id}: {why}")]
    App {
        /// The app.
        app_id: u32,
        /// What is wrong, without the secret.
        why: String,
    },
    /// The apps as a whole are unusable (none, a duplicate, two defaults).
    #[error("[[apps]]: {0}")]
    Apps(String),
}

/// An environment variable's name as given to `--app` or `secret_env`. Its `Display` names
/// it, except a name exactly as long as a ServerSecret: that is most likely
/// the secret itself pasted where its variable's name belongs, and an error
/// line must not echo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvName(pub String);

impl std::fmt::Display for EnvName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.len() == SECRET_BYTES {
            write!(
                f,
                "<a {SECRET_BYTES}-byte name, as long as a ServerSecret: give the variable's NAME, never the secret>"
            )
        } else {
            f.write_str(&self.0)
        }
    }
}

/// The AppId and where its secret comes from. The secret is read from the
/// environment or a file only: argv is visible to every user through `ps`.
#[derive(Debug, Clone, clap::Args)]
pub struct ZegoArgs {
    /// ZEGOCLOUD AppId (uint32) of the one app. The ServerSecret is read from
    /// the environment variable ZEGO_SERVER_SECRET, or from the file named by
    /// ZEGO_SERVER_SECRET_FILE; never from the command line. Several apps are
    /// listed in the config file's [[apps]] instead.
    #[arg(long = "app-id", env = "ZEGO_APP_ID", value_name = "APP_ID")]
    pub app_id: Option<String>,
}

/// The validated AppId and its secret.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The AppId all calls are signed for.
    pub app_id: u32,
    /// Its ServerSecret.
    pub secret: Secret,
}

impl ZegoArgs {
    /// Validates the AppId and reads the secret from env or file.
    pub fn credentials(&self) -> Result<Credentials, ConfigError> {
        let raw = self.app_id.as_deref().ok_or(ConfigError::Missing("ZEGO_APP_ID"))?;
        let app_id = parse_app_id(raw)?;
        let secret = read_secret(
            std::env::var(SECRET_ENV).ok(),
            std::env::var_os(SECRET_FILE_ENV).map(PathBuf::from),
        )?;
        Ok(Credentials { app_id, secret })
    }
}

/// Parses an AppId: a non-zero uint32.
pub fn parse_app_id(raw: &str) -> Result<u32, ConfigError> {
    match raw.trim().parse::<u32>() {
        Ok(0) => Err(ConfigError::Invalid {
            name: "ZEGO_APP_ID",
            why: "must not be 0".into(),
        }),
        Ok(id) => Ok(id),
        Err(_) => Err(ConfigError::Invalid {
            name: "ZEGO_APP_ID",
            why: format!("{raw:?} is not a uint32"),
        }),
    }
}

/// Picks the secret from the env value or the file; exactly one may be set.
/// A trailing newline in the file is dropped (editors add one).
pub fn read_secret(env_value: Option<String>, file: Option<PathBuf>) -> Result<Secret, ConfigError> {
    let value = match (env_value, file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::Invalid {
                name: SECRET_ENV,
                why: format!("set either {SECRET_ENV} or {SECRET_FILE_ENV}, not both"),
            })
        }
        (Some(v), None) => v,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(|e| ConfigError::Invalid {
                name: SECRET_FILE_ENV,
                why: format!("cannot read {}: {e}", path.display()),
            })?
            .trim_end_matches(['\r', '\n'])
            .to_owned(),
        (None, None) => return Err(ConfigError::Missing("ZEGO_SERVER_SECRET or ZEGO_SERVER_SECRET_FILE")),
    };
    check_secret(value).map_err(|why| ConfigError::Invalid { name: SECRET_ENV, why })
}

/// The rules every ServerSecret must pass, wherever it came from: not empty,
/// no control character, exactly [`SECRET_BYTES`] bytes. The error never
/// holds the value.
pub fn check_secret(value: String) -> Result<Secret, String> {
    if value.is_empty() {
        return Err("is empty".into());
    }
    if value.chars().any(char::is_control) {
        return Err("holds a control character".into());
    }
    if value.len() != SECRET_BYTES {
        return Err(format!(
            "must be exactly {SECRET_BYTES} bytes, as ZEGOCLOUD issues a ServerSecret (the vendor's own token generators refuse any other length); this one is {} bytes",
            value.len()
        ));
    }
    Ok(Secret::new(value))
}

/// Parses durations written as `250ms`, `10s`, `5m`, `2h`, `90d`, or a bare
/// number of seconds.
pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 500ms, 10s, 5m, 2h or 90d"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return Err(format!("{raw:?} has an unknown unit (use ms, s, m, h or d)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("{raw:?} is not a duration"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration as [`parse_duration`] reads it back, in the largest whole unit:
/// `15m`, `30s`, `250ms`, `24h`, `7d`. clap's defaults come from the constants
/// through it, so a default has one source and `--help` shows it in words.
pub fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    match ms {
        0 => "0ms".to_owned(),
        ms if ms % 1000 != 0 => format!("{ms}ms"),
        _ => {
            let s = d.as_secs();
            match s {
                // A day reads better as 24h; days from two on.
                s if s % 86_400 == 0 && s >= 2 * 86_400 => format!("{}d", s / 86_400),
                s if s % 3600 == 0 => format!("{}h", s / 3600),
                s if s % 60 == 0 => format!("{}m", s / 60),
                s => format!("{s}s"),
            }
        }
    }
}

/// Stands for the password inside [`redact_url`] before it is shown as
/// `[redacted]`: URL-safe, so the URL keeps it verbatim.
const PASSWORD_PLACEHOLDER: &str = "kickq-redacted-password";

/// Removes the password (and the query string, which may carry one:
/// `?password=` is legal in a PostgreSQL URL) from a URL so it can be logged.
pub fn redact_url(url: &str) -> String {
    // A broker list (`KICKQ_AMQP_URL`) is comma-separated: each node is
    // redacted alone, or a later node's password would pass as a path.
    if crate::amqp::connect::has_split_password(url) {
        return "[unparseable url]".into();
    }
    if url.contains(',') {
        return url
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| {
                if p.contains("://") {
                    redact_url(p)
                } else if p.contains('@') {
                    "[unparseable url]".into()
                } else {
                    p.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(",");
    }
    match url::Url::parse(url) {
        Ok(mut u) => {
            // A placeholder the URL keeps as it is, then shown as the
            // readable `[redacted]` (set as such, the URL would percent-encode
            // it to `%5Bredacted%5D`).
            let redacted = u.password().is_some() && u.set_password(Some(PASSWORD_PLACEHOLDER)).is_ok();
            u.set_query(None);
            let shown = u.to_string();
            if redacted {
                shown.replacen(&format!(":{PASSWORD_PLACEHOLDER}@"), ":[redacted]@", 1)
            } else {
                shown
            }
        }
        Err(_) => "[unparseable url]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_text_reads_back_as_the_same_duration() {
        let cases = [
            (Duration::ZERO, "0ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_millis(1500), "1500ms"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_secs(90), "90s"),
            (Duration::from_secs(120), "2m"),
            (Duration::from_secs(900), "15m"),
            (Duration::from_secs(86_400), "24h"),
            (Duration::from_secs(3 * 86_400), "3d"),
            (Duration::from_secs(7200), "2h"),
        ];
        for (d, text) in cases {
            assert_eq!(duration_text(d), text);
            assert_eq!(parse_duration(text), Ok(d), "{text}");
        }
    }

    #[test]
    fn a_broker_list_is_redacted_node_by_node() {
        let got = redact_url("amqp://u:pw1@h1:5701/%2f,amqp://u:pw2@h2:5702/%2f, h3:5703,u:pw3@h4");
        assert!(
            !got.contains("pw1") && !got.contains("pw2") && !got.contains("pw3"),
            "{got}"
        );
        assert_eq!(
            got, "[unparseable url]",
            "a later node with user info but no scheme may be a password's half"
        );
        let got = redact_url("amqp://u:pw1@h1:5701/%2f,amqp://u:pw2@h2:5702/%2f, h3:5703");
        assert_eq!(
            got,
            "amqp://u:[redacted]@h1:5701/%2f,amqp://u:[redacted]@h2:5702/%2f,h3:5703"
        );
        assert_eq!(
            redact_url("amqp://u:pw@h:5672/%2f?x=1"),
            "amqp://u:[redacted]@h:5672/%2f"
        );
        assert_eq!(redact_url("amqp://h:5672/%2f"), "amqp://h:5672/%2f");
        assert_eq!(
            redact_url("amqp://u:12,34@h/%2f"),
            "[unparseable url]",
            "a raw comma in a password"
        );
    }

    #[test]
    fn app_id_table() {
        assert_eq!(parse_app_id("1234567890").unwrap(), 1234567890);
        assert_eq!(parse_app_id(" 42 ").unwrap(), 42);
        for bad in ["", "0", "-1", "4294967296", "abc", "1.5"] {
            let err = parse_app_id(bad).unwrap_err().to_string();
            assert!(err.starts_with("ZEGO_APP_ID is invalid"), "{bad}: {err}");
        }
    }

    const S32: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn secret_sources() {
        assert_eq!(read_secret(Some(S32.into()), None).unwrap().expose(), S32);
        for (bad, len) in [("s3", 2), ("0123456789abcdef0123456789abcdef0", 33)] {
            let err = read_secret(Some(bad.into()), None).unwrap_err().to_string();
            assert!(err.contains("must be exactly 32 bytes"), "{err}");
            assert!(err.contains(&format!("this one is {len} bytes")), "{err}");
            assert!(!err.contains(bad), "the secret is never echoed: {err}");
        }
        assert!(read_secret(None, None)
            .unwrap_err()
            .to_string()
            .contains("ZEGO_SERVER_SECRET"));
        assert!(read_secret(Some(String::new()), None).is_err());
        let dir = std::env::temp_dir().join(format!("kickq-secret-{}", std::process::id()));
        std::fs::write(&dir, format!("{S32}\n")).unwrap();
        assert_eq!(
            read_secret(None, Some(dir.clone())).unwrap().expose(),
            S32,
            "a trailing newline is trimmed first"
        );
        let both = read_secret(Some("x".into()), Some(dir.clone()))
            .unwrap_err()
            .to_string();
        assert!(both.contains("not both"), "{both}");
        std::fs::remove_file(&dir).unwrap();
        let missing = read_secret(None, Some(dir)).unwrap_err().to_string();
        assert!(missing.contains("ZEGO_SERVER_SECRET_FILE"), "{missing}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("90d").unwrap(), Duration::from_secs(90 * 86400));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn urls_lose_their_password() {
        let r = redact_url("amqp://guest:hunter2@127.0.0.1:5672/%2f");
        assert!(!r.contains("hunter2"), "{r}");
        assert!(r.contains("guest"), "{r}");
        let r = redact_url("postgres://u@db:5432/kickq?password=hunter2&sslmode=verify-full");
        assert!(!r.contains("hunter2") && r.contains("db:5432/kickq"), "{r}");
    }
}
