//! The config file (`--config kickq.toml`, `KICKQ_CONFIG`): its shape, read with `toml` + serde, and the
//! refusals (inline secrets, unknown keys) that keep it safe to commit.
//!
//! The file holds two things. Settings, each under its environment
//! variable's name, lower-case, without the `KICKQ_` prefix (`prefetch` for
//! `KICKQ_PREFETCH`, `zego_api_url` for `ZEGO_API_URL`, `database_url` for
//! `DATABASE_URL`). And `[[apps]]`, the ZEGOCLOUD apps the worker serves. A
//! setting from the file is a default: its environment variable and its flag
//! override it (the CLI applies them as clap defaults, so one parser
//! validates the value however it was given).
//!
//! Secrets never live in the file: an app names the variable or the file
//! that holds its ServerSecret, and a file with an inline secret, or a broker
//! or database URL with a password in it, is refused.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The environment variable naming the config file (`--config` overrides it).
pub const CONFIG_ENV: &str = "KICKQ_CONFIG";

/// Keys that would put a secret in the file, and where the secret goes instead.
const INLINE_SECRETS: &[(&str, &str)] = &[
    (
        "zego_server_secret",
        "name its variable with secret_env, or its file with secret_file, under [[apps]]",
    ),
    (
        "secret",
        "name its variable with secret_env, or its file with secret_file",
    ),
    (
        "server_secret",
        "name its variable with secret_env, or its file with secret_file",
    ),
];

/// Whether a setting's value is a URL that carries a password (in its user
/// info, or as a `password=` query parameter, as PostgreSQL allows), which
/// must come from the environment instead. Every setting is checked: any
/// `*_url` may carry one, and each node of a comma-separated broker list.
fn holds_password(value: &str) -> bool {
    value.split(',').any(|part| {
        let part = part.trim();
        // `u:pw@h2` parses as a URL of scheme `u`: a part without `://`
        // is a broker node's `host:port` (or user info) after the first.
        let parsed = match part.contains("://") {
            true => url::Url::parse(part),
            false if part.contains('@') => return true,
            false => url::Url::parse(&format!("amqp://{part}")),
        };
        parsed.is_ok_and(|u| u.password().is_some() || u.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")))
    })
}

/// One `[[apps]]` entry as written; [`crate::config::apps`] validates it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileApp {
    /// The AppId (uint32).
    pub app_id: u32,
    /// The environment variable that holds its ServerSecret.
    #[serde(default)]
    pub secret_env: Option<String>,
    /// The file that holds its ServerSecret.
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    /// Calls per second for this app (default: `KICKQ_RATE`, 50).
    #[serde(default)]
    pub rate: Option<u32>,
    /// API base URL of this app (default: `ZEGO_API_URL`, `https://rtc-api.zego.im`).
    #[serde(default)]
    pub api_url: Option<String>,
    /// The app of jobs that name none.
    #[serde(default)]
    pub default: bool,
    /// The shard that serves this app (queues `{ns}.{shard}.requests`, ...);
    /// none: the default shard (`{ns}.requests`).
    #[serde(default)]
    pub shard: Option<String>,
}

/// A parsed config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Settings by key, each as the text its environment variable would hold
    /// (a list becomes comma-separated).
    pub settings: BTreeMap<String, String>,
    /// The `[[apps]]` entries, in file order.
    pub apps: Vec<FileApp>,
}

/// Why a config file was refused. `Display` names the file and the key.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file could not be read.
    #[error("config file {path}: cannot read it: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The operating system's refusal.
        source: std::io::Error,
    },
    /// It is not TOML of the documented shape.
    #[error("config file {path}: {why}")]
    Shape {
        /// The file.
        path: PathBuf,
        /// What is wrong, with the key.
        why: String,
    },
    /// It holds a secret inline.
    #[error("config file {path}: `{key}` holds a secret, which never goes in the file: {instead}")]
    InlineSecret {
        /// The file.
        path: PathBuf,
        /// The offending key (`apps[1].secret`).
        key: String,
        /// Where the secret goes instead.
        instead: String,
    },
    /// A key that is no setting of any subcommand.
    #[error("config file {path}: unknown setting `{key}` (a setting is its environment variable's name, lower-case, without KICKQ_: see the README's Configuration)")]
    Unknown {
        /// The file.
        path: PathBuf,
        /// The unknown key.
        key: String,
    },
}

impl ConfigFile {
    /// Reads and parses the file at `path`.
    pub fn read(path: &Path) -> Result<Self, FileError> {
        let text = std::fs::read_to_string(path).map_err(|source| FileError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(path, &text)
    }

    /// Parses `text` as the config file at `path` (pure: for tests and [`ConfigFile::read`]).
    pub fn parse(path: &Path, text: &str) -> Result<Self, FileError> {
        let shape = |why: String| FileError::Shape {
            path: path.to_owned(),
            why,
        };
        // toml's own Display quotes the offending source line, which may be a
        // secret or a password: say where, and what, but not the text.
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            shape(match line {
                Some(n) => format!("line {n}: {}", e.message().trim_end()),
                None => e.message().trim_end().to_owned(),
            })
        })?;
        let mut file = ConfigFile {
            path: path.to_owned(),
            ..ConfigFile::default()
        };
        for (key, value) in table {
            if let Some((_, instead)) = INLINE_SECRETS.iter().find(|(k, _)| *k == key) {
                return Err(FileError::InlineSecret {
                    path: path.to_owned(),
                    key,
                    instead: (*instead).to_owned(),
                });
            }
            if key == "apps" {
                let toml::Value::Array(entries) = value else {
                    return Err(shape("`apps` must be a list of [[apps]] tables".into()));
                };
                for (i, entry) in entries.into_iter().enumerate() {
                    file.apps.push(parse_app(path, i, entry)?);
                }
                continue;
            }
            let text = setting_text(&value)
                .ok_or_else(|| shape(format!("`{key}` must be a string, number, boolean or list of them")))?;
            if holds_password(&text) {
                let env = match key.as_str() {
                    "amqp_url" => "KICKQ_AMQP_URL".to_owned(),
                    "database_url" => "DATABASE_URL".to_owned(),
                    other => format!("its environment variable (KICKQ_{})", other.to_ascii_uppercase()),
                };
                return Err(FileError::InlineSecret {
                    path: path.to_owned(),
                    key,
                    instead: format!("the URL holds a password: set {env} in the environment instead"),
                });
            }
            file.settings.insert(key, text);
        }
        Ok(file)
    }

    /// The key a setting with environment variable `env` has in the file.
    pub fn key_of(env: &str) -> String {
        let lower = env.to_ascii_lowercase();
        lower.strip_prefix("kickq_").map(str::to_owned).unwrap_or(lower)
    }
}

fn parse_app(path: &Path, i: usize, entry: toml::Value) -> Result<FileApp, FileError> {
    let toml::Value::Table(t) = entry else {
        return Err(FileError::Shape {
            path: path.to_owned(),
            why: format!("apps[{i}] must be a table ([[apps]])"),
        });
    };
    if let Some((k, instead)) = INLINE_SECRETS.iter().find(|(k, _)| t.contains_key(*k)) {
        return Err(FileError::InlineSecret {
            path: path.to_owned(),
            key: format!("apps[{i}].{k}"),
            instead: (*instead).to_owned(),
        });
    }
    toml::Value::Table(t)
        .try_into()
        .map_err(|e: toml::de::Error| FileError::Shape {
            path: path.to_owned(),
            why: format!("apps[{i}]: {}", e.message()),
        })
}

/// A setting's value as the text its environment variable would hold.
fn setting_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        toml::Value::Array(items) => {
            let parts: Option<Vec<String>> = items
                .iter()
                .map(|v| match v {
                    toml::Value::Array(_) | toml::Value::Table(_) => None,
                    v => setting_text(v),
                })
                .collect();
            parts.map(|p| p.join(","))
        }
        toml::Value::Datetime(d) => Some(d.to_string()),
        toml::Value::Table(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfigFile, FileError> {
        ConfigFile::parse(Path::new("kickq.toml"), text)
    }

    /// The README's example parses to what it says.
    #[test]
    fn the_documented_example_parses() {
        let f = parse(
            r#"
namespace = "kickq"
prefetch = 20000

[[apps]]
app_id = 1234567890
secret_env = "ZEGO_SECRET_MAIN"
rate = 50
api_url = "https://rtc-api.zego.im"
default = true

[[apps]]
app_id = 987654321
secret_file = "/run/secrets/zego-games"
"#,
        )
        .unwrap();
        assert_eq!(f.settings["namespace"], "kickq");
        assert_eq!(f.settings["prefetch"], "20000");
        assert_eq!(f.apps.len(), 2);
        assert_eq!(
            f.apps[0],
            FileApp {
                app_id: 1234567890,
                secret_env: Some("ZEGO_SECRET_MAIN".into()),
                secret_file: None,
                rate: Some(50),
                api_url: Some("https://rtc-api.zego.im".into()),
                default: true,
                shard: None,
            }
        );
        assert_eq!(
            f.apps[1].secret_file.as_deref(),
            Some(Path::new("/run/secrets/zego-games"))
        );
        assert!(!f.apps[1].default);
    }

    #[test]
    fn refusals_by_table() {
        let cases: &[(&str, &str)] = &[
            (
                "[[apps]]\napp_id = 1\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
                "`apps[0].secret` holds a secret",
            ),
            ("zego_server_secret = \"x\"\n", "`zego_server_secret` holds a secret"),
            (
                "amqp_url = \"amqp://kickq:pw@host/%2f\"\n",
                "set KICKQ_AMQP_URL in the environment",
            ),
            (
                "database_url = \"postgres://u:pw@db/kickq\"\n",
                "set DATABASE_URL in the environment",
            ),
            (
                "[[apps]]\napp_id = 1\nsecret_env = \"S\"\ncolour = \"red\"\n",
                "apps[0]: unknown field `colour`",
            ),
            ("[[apps]]\napp_id = -1\nsecret_env = \"S\"\n", "apps[0]:"),
            ("[[apps]]\nsecret_env = \"S\"\n", "missing field `app_id`"),
            ("apps = 3\n", "`apps` must be a list"),
            ("[limits]\nx = 1\n", "`limits` must be a string"),
            ("prefetch = \n", "kickq.toml: line 1:"),
            (
                "database_url = \"postgres://u@db/kickq?password=pw\"\n",
                "set DATABASE_URL in the environment",
            ),
            (
                "amqp_url = \"amqp://u@h1/%2f,amqp://u:pw@h2/%2f\"\n",
                "set KICKQ_AMQP_URL in the environment",
            ),
            (
                "amqp_url = \"amqp://u@h1/%2f,u:pw@h2\"\n",
                "set KICKQ_AMQP_URL in the environment",
            ),
            (
                "management_url = \"http://admin:pw@127.0.0.1:15672\"\n",
                "(KICKQ_MANAGEMENT_URL)",
            ),
            // A malformed line is located, never quoted: it may hold a secret.
            (
                "namespace = \"kq\"\nzego_server = 0123456789abcdef0123456789abcdef\n",
                "line 2:",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err}");
            assert!(!err.contains("0123456789abcdef"), "the secret is printed: {err}");
            assert!(
                !err.contains(":pw@") && !err.contains("password=pw"),
                "the password is printed: {err}"
            );
            assert_eq!(err.lines().count(), 1, "one line: {err}");
        }
    }

    #[test]
    fn values_become_the_text_an_env_var_would_hold() {
        let f = parse(
            "retry_delays = [\"1s\", \"5s\"]\nledger = true\nrate = 25\namqp_url = \"amqp://10.0.0.1:5672/%2f\"\n",
        )
        .unwrap();
        assert_eq!(f.settings["retry_delays"], "1s,5s");
        assert_eq!(f.settings["ledger"], "true");
        assert_eq!(f.settings["rate"], "25");
        assert_eq!(
            f.settings["amqp_url"], "amqp://10.0.0.1:5672/%2f",
            "a URL without a password may live in the file"
        );
    }

    #[test]
    fn keys_are_env_names_lower_case_without_the_prefix() {
        for (env, key) in [
            ("KICKQ_PREFETCH", "prefetch"),
            ("ZEGO_API_URL", "zego_api_url"),
            ("DATABASE_URL", "database_url"),
            ("KICKQ_MAX_IN_FLIGHT", "max_in_flight"),
        ] {
            assert_eq!(ConfigFile::key_of(env), key);
        }
    }
}
