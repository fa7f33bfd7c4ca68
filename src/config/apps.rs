//! The ZEGOCLOUD apps one worker serves, validated: from `ZEGO_APP_ID` + `ZEGO_SERVER_SECRET` (one app), or
//! from the config file's `[[apps]]` (secrets read from their variable or file), with the default app chosen.

use crate::config::file::FileApp;
use crate::config::shards::{Routing, ShardName};
use crate::config::{check_secret, parse_app_id, ConfigError, Credentials};
use std::path::PathBuf;

/// Where an app's ServerSecret was read from, for `--print-config` and logs
/// (never the secret itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable, by name.
    Env(String),
    /// A file, by path.
    File(PathBuf),
    /// Given by the library caller.
    Given,
}

impl std::fmt::Display for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Env(name) => write!(f, "env {name}"),
            SecretSource::File(path) => write!(f, "file {}", path.display()),
            SecretSource::Given => f.write_str("given by the caller"),
        }
    }
}

/// One app: its AppId and secret, its rate budget and its API host.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// AppId and ServerSecret (Debug prints the secret as `[redacted]`).
    pub credentials: Credentials,
    /// Calls per second for this AppId, retries included.
    pub rate: u32,
    /// API base URL (regional hosts exist).
    pub api_url: String,
    /// Where the secret came from.
    pub secret_source: SecretSource,
    /// The shard that serves it (the default shard unless the config file
    /// says `shard = "..."`).
    pub shard: ShardName,
}

impl AppConfig {
    /// An app at the documented rate on ZEGOCLOUD's default host.
    pub fn new(credentials: Credentials) -> Self {
        Self {
            credentials,
            rate: crate::config::DEFAULT_RATE,
            api_url: crate::config::DEFAULT_API_URL.to_owned(),
            secret_source: SecretSource::Given,
            shard: ShardName::default(),
        }
    }

    /// The same app, served by `shard`.
    pub fn in_shard(mut self, shard: ShardName) -> Self {
        self.shard = shard;
        self
    }

    /// Its AppId.
    pub fn app_id(&self) -> u32 {
        self.credentials.app_id
    }

    /// What its API client is built from, with these timeouts.
    pub fn client_config(
        &self,
        connect_timeout: std::time::Duration,
        total_timeout: std::time::Duration,
    ) -> crate::zego::client::ClientConfig {
        crate::zego::client::ClientConfig {
            base_url: self.api_url.clone(),
            app_id: self.app_id(),
            secret: self.credentials.secret.clone(),
            connect_timeout,
            total_timeout,
        }
    }
}

/// Which app a job belongs to, or why none (see [`Apps::select`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selected {
    /// A configured app.
    App(u32),
    /// The job names an app this worker does not serve.
    Unknown(u32),
    /// The job names no app, and no app is the default.
    NoDefault,
}

/// The validated apps: at least one, AppIds distinct, at most one default.
#[derive(Debug, Clone)]
pub struct Apps {
    list: Vec<AppConfig>,
    default: Option<u32>,
}

impl Apps {
    /// One app, which is also the default.
    pub fn single(app: AppConfig) -> Self {
        let id = app.app_id();
        Self {
            list: vec![app],
            default: Some(id),
        }
    }

    /// Validates a list. The default is `default`, or the only app.
    pub fn new(list: Vec<AppConfig>, default: Option<u32>) -> Result<Self, ConfigError> {
        if list.is_empty() {
            return Err(ConfigError::Apps("no app is configured".into()));
        }
        for (i, a) in list.iter().enumerate() {
            if list[..i].iter().any(|b| b.app_id() == a.app_id()) {
                return Err(ConfigError::App {
                    app_id: a.app_id(),
                    why: "is listed twice".into(),
                });
            }
        }
        if let Some(d) = default {
            if !list.iter().any(|a| a.app_id() == d) {
                return Err(ConfigError::App {
                    app_id: d,
                    why: "is the default but not a configured app".into(),
                });
            }
        }
        let default = default.or_else(|| (list.len() == 1).then(|| list[0].app_id()));
        Ok(Self { list, default })
    }

    /// The config file's `[[apps]]`: each secret read from its variable (via
    /// `env`) or its file; `rate` and `api_url` default to the worker-wide
    /// settings. Pure but for reading secret files.
    pub fn from_file(
        entries: &[FileApp],
        default_rate: u32,
        default_api_url: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::from_file_serving(entries, default_rate, default_api_url, env, None)
    }

    /// [`Apps::from_file`] for the apps of the shards in `serve` only (all
    /// when `None`): the secrets of other shards' apps are not read, since
    /// this process never calls for them.
    pub fn from_file_serving(
        entries: &[FileApp],
        default_rate: u32,
        default_api_url: &str,
        env: impl Fn(&str) -> Option<String>,
        serve: Option<&[ShardName]>,
    ) -> Result<Self, ConfigError> {
        let routing = routing(entries)?;
        if let Some(serve) = serve {
            let known = routing.shards();
            if let Some(unknown) = serve.iter().find(|s| !known.contains(s)) {
                return Err(ConfigError::Apps(format!(
                    "no app is in shard {unknown} (--shards); the config's shards are {}",
                    names(&known)
                )));
            }
        }
        let served = |e: &FileApp| {
            let shard = routing.shard_of(e.app_id).cloned().unwrap_or_default();
            serve.is_none_or(|s| s.contains(&shard))
        };
        let mut list = Vec::with_capacity(entries.len());
        for e in entries.iter().filter(|e| served(e)) {
            let bad = |why: String| ConfigError::App { app_id: e.app_id, why };
            let (value, source) = match (&e.secret_env, &e.secret_file) {
                (Some(_), Some(_)) => return Err(bad("give secret_env or secret_file, not both".into())),
                (None, None) => return Err(bad("give secret_env (a variable's name) or secret_file (a path)".into())),
                (Some(name), None) => {
                    let shown = crate::config::EnvName(name.clone());
                    let value = env(name).ok_or_else(|| bad(format!("secret_env names {shown}, which is not set")))?;
                    (value, SecretSource::Env(name.clone()))
                }
                (None, Some(path)) => {
                    let value = std::fs::read_to_string(path)
                        .map_err(|err| bad(format!("cannot read secret_file {}: {err}", path.display())))?;
                    (
                        value.trim_end_matches(['\r', '\n']).to_owned(),
                        SecretSource::File(path.clone()),
                    )
                }
            };
            let secret = check_secret(value).map_err(|why| bad(format!("its secret ({source}) {why}")))?;
            let rate = e.rate.unwrap_or(default_rate);
            if rate == 0 {
                return Err(bad("rate must be at least 1".into()));
            }
            list.push(AppConfig {
                credentials: Credentials {
                    app_id: e.app_id,
                    secret,
                },
                rate,
                api_url: e.api_url.clone().unwrap_or_else(|| default_api_url.to_owned()),
                secret_source: source,
                shard: routing.shard_of(e.app_id).cloned().unwrap_or_default(),
            });
        }
        if list.is_empty() {
            return Err(ConfigError::Apps("no app is configured".into()));
        }
        // The deployment's default app, if this process serves it: a served
        // app is not the default just because it is the only one served.
        let default = routing.default_app().filter(|d| list.iter().any(|a| a.app_id() == *d));
        Ok(Self { list, default })
    }

    /// The apps of a command: the config file's `[[apps]]` if it lists any,
    /// else the one app of `ZEGO_APP_ID` (`zego`) and `ZEGO_SERVER_SECRET`
    /// or `ZEGO_SERVER_SECRET_FILE`. Both at once is refused: which would win
    /// is a guess an operator should not have to make.
    pub fn resolve(
        zego: &crate::config::ZegoArgs,
        file_apps: &[FileApp],
        default_rate: u32,
        default_api_url: &str,
    ) -> Result<Self, ConfigError> {
        Self::resolve_serving(zego, file_apps, default_rate, default_api_url, None)
    }

    /// [`Apps::resolve`] for the apps of the shards in `serve` (all when
    /// `None`; `ZEGO_APP_ID`'s one app is in the default shard).
    pub fn resolve_serving(
        zego: &crate::config::ZegoArgs,
        file_apps: &[FileApp],
        default_rate: u32,
        default_api_url: &str,
        serve: Option<&[ShardName]>,
    ) -> Result<Self, ConfigError> {
        if !file_apps.is_empty() {
            if zego.app_id.is_some() {
                return Err(ConfigError::Apps(
                    "ZEGO_APP_ID (or --app-id) is set and the config file lists [[apps]]: keep one of them".into(),
                ));
            }
            return Self::from_file_serving(
                file_apps,
                default_rate,
                default_api_url,
                |name| std::env::var(name).ok(),
                serve,
            );
        }
        if let Some(unknown) = serve.and_then(|s| s.iter().find(|s| !s.is_default())) {
            return Err(ConfigError::Apps(format!(
                "no app is in shard {unknown} (--shards): shards come from the config file's [[apps]]"
            )));
        }
        let credentials = zego.credentials()?;
        let secret_source = match std::env::var_os(crate::config::SECRET_ENV) {
            Some(_) => SecretSource::Env(crate::config::SECRET_ENV.to_owned()),
            None => SecretSource::File(
                std::env::var_os(crate::config::SECRET_FILE_ENV)
                    .unwrap_or_default()
                    .into(),
            ),
        };
        Ok(Self::single(AppConfig {
            credentials,
            rate: default_rate,
            api_url: default_api_url.to_owned(),
            secret_source,
            shard: ShardName::default(),
        }))
    }

    /// Which shard serves each of these apps.
    pub fn routing(&self) -> Routing {
        Routing::new(self.iter().map(|a| (a.app_id(), a.shard.clone())), self.default)
    }

    /// The shards these apps are in, each once, in name order.
    pub fn shards(&self) -> Vec<ShardName> {
        self.routing().shards()
    }

    /// The apps of one shard (the default app stays the default if it is one
    /// of them); `None` if the shard has none of these apps.
    pub fn of_shard(&self, shard: &ShardName) -> Option<Apps> {
        let list: Vec<AppConfig> = self.iter().filter(|a| &a.shard == shard).cloned().collect();
        if list.is_empty() {
            return None;
        }
        let default = self.default.filter(|d| list.iter().any(|a| a.app_id() == *d));
        Some(Self { list, default })
    }

    /// Every app, in configured order.
    pub fn iter(&self) -> impl Iterator<Item = &AppConfig> {
        self.list.iter()
    }

    /// Every app, to change in place (rate, host).
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut AppConfig> {
        self.list.iter_mut()
    }

    /// Adds an app, or replaces the one with its AppId.
    pub fn insert(&mut self, app: AppConfig) {
        match self.list.iter_mut().find(|a| a.app_id() == app.app_id()) {
            Some(slot) => *slot = app,
            None => self.list.push(app),
        }
    }

    /// Makes a configured app the default; `false` if it is not configured.
    pub fn set_default(&mut self, app_id: u32) -> bool {
        let known = self.get(app_id).is_some();
        if known {
            self.default = Some(app_id);
        }
        known
    }

    /// Makes `default` the default app if it is one of these, else none.
    pub fn keep_default(&mut self, default: Option<u32>) {
        self.default = default.filter(|d| self.get(*d).is_some());
    }

    /// The app with this AppId.
    pub fn get(&self, app_id: u32) -> Option<&AppConfig> {
        self.list.iter().find(|a| a.app_id() == app_id)
    }

    /// The app of jobs that name none.
    pub fn default_app(&self) -> Option<u32> {
        self.default
    }

    /// How many apps.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Never true for validated apps; here for clippy's `len` rule.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// The app a job's `app_id` selects.
    pub fn select(&self, job_app: Option<u32>) -> Selected {
        match job_app {
            Some(id) if self.get(id).is_some() => Selected::App(id),
            Some(id) => Selected::Unknown(id),
            None => self.default.map_or(Selected::NoDefault, Selected::App),
        }
    }
}

/// Which shard serves each app of the config file's `[[apps]]` (all of them,
/// secrets unread), with the default app. Refuses a bad shard name, an AppId
/// listed twice, and two defaults.
pub fn routing(entries: &[FileApp]) -> Result<Routing, ConfigError> {
    let mut pairs = Vec::with_capacity(entries.len());
    let mut default = None;
    for (i, e) in entries.iter().enumerate() {
        let bad = |why: String| ConfigError::App { app_id: e.app_id, why };
        parse_app_id(&e.app_id.to_string()).map_err(|_| bad("app_id must not be 0".into()))?;
        if entries[..i].iter().any(|b| b.app_id == e.app_id) {
            return Err(bad("is listed twice".into()));
        }
        let shard = match &e.shard {
            None => ShardName::default(),
            Some(raw) => ShardName::parse(raw).map_err(|err| bad(format!("shard: {err}")))?,
        };
        if e.default {
            if let Some(other) = default {
                return Err(ConfigError::Apps(format!(
                    "{other} and {} are both marked default = true; mark one",
                    e.app_id
                )));
            }
            default = Some(e.app_id);
        }
        pairs.push((e.app_id, shard));
    }
    if default.is_none() && entries.len() == 1 {
        default = Some(entries[0].app_id);
    }
    Ok(Routing::new(pairs, default))
}

/// The routing of a command's config file: `None` without a file or
/// without `[[apps]]` (then everything is the default shard's).
pub fn file_routing(file: Option<&crate::config::file::ConfigFile>) -> Result<Option<Routing>, ConfigError> {
    file.filter(|f| !f.apps.is_empty())
        .map(|f| routing(&f.apps))
        .transpose()
}

/// The shards a command looks at: the config file's, or the default shard.
pub fn file_shards(file: Option<&crate::config::file::ConfigFile>) -> Result<Vec<ShardName>, ConfigError> {
    Ok(file_routing(file)?.map_or_else(|| vec![ShardName::default()], |r| r.shards()))
}

/// Shard names for a message: `default, eu, us`.
pub fn names(shards: &[ShardName]) -> String {
    shards.iter().map(ShardName::as_str).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const S: &str = "0123456789abcdef0123456789abcdef";

    fn app(id: u32) -> AppConfig {
        AppConfig::new(Credentials {
            app_id: id,
            secret: Secret::new(S),
        })
    }

    fn entry(id: u32, env: Option<&str>, default: bool) -> FileApp {
        FileApp {
            app_id: id,
            secret_env: env.map(str::to_owned),
            secret_file: None,
            rate: None,
            api_url: None,
            default,
            shard: None,
        }
    }

    fn in_shard(shard: &str, e: FileApp) -> FileApp {
        FileApp {
            shard: Some(shard.into()),
            ..e
        }
    }

    /// `--shards` picks the apps whose secrets are read; the deployment's
    /// default stays the default only where it is served.
    #[test]
    fn serving_shards_by_table() {
        let sh = |names: &[&str]| names.iter().map(|n| ShardName::parse(n).unwrap()).collect::<Vec<_>>();
        let entries = vec![
            in_shard("eu", entry(1, Some("GOOD"), false)),
            in_shard("us", entry(2, Some("UNSET"), true)),
            entry(3, Some("GOOD"), false),
        ];
        /// Shards served, and the apps and default that gives, or a piece of the error.
        type Case<'a> = (Option<&'a [&'a str]>, Result<(Vec<u32>, Option<u32>), &'a str>);
        let cases: &[Case] = &[
            (Some(&["eu"]), Ok((vec![1], None))),
            (Some(&["eu", "default"]), Ok((vec![1, 3], None))),
            (Some(&["default"]), Ok((vec![3], None))),
            // app 2's secret variable is unset: only serving us reads it.
            (Some(&["us"]), Err("secret_env names UNSET")),
            (None, Err("secret_env names UNSET")),
            (
                Some(&["asia"]),
                Err("no app is in shard asia (--shards); the config's shards are default, eu, us"),
            ),
        ];
        for (serve, want) in cases {
            let serve = serve.map(sh);
            let got = Apps::from_file_serving(&entries, 50, "https://rtc-api.zego.im", env, serve.as_deref());
            match (got, want) {
                (Ok(apps), Ok((ids, default))) => {
                    assert_eq!(&apps.iter().map(|a| a.app_id()).collect::<Vec<_>>(), ids, "{serve:?}");
                    assert_eq!(apps.default_app(), *default, "{serve:?}");
                }
                (Err(e), Err(text)) => assert!(e.to_string().contains(text), "{serve:?}: {e}"),
                (got, want) => panic!("{serve:?}: got {got:?}, want {want:?}"),
            }
        }
        let all = routing(&entries).unwrap();
        assert_eq!(all.default_app(), Some(2));
        assert_eq!(all.shard_of(1).unwrap().as_str(), "eu");
        assert_eq!(all.shard_of(3).unwrap().as_str(), "default");
        let bad = vec![in_shard("EU", entry(1, Some("GOOD"), false))];
        assert!(routing(&bad)
            .unwrap_err()
            .to_string()
            .contains("shard: \"EU\" is not a shard name"));
        let apps = Apps::from_file_serving(&entries[..1], 50, "https://rtc-api.zego.im", env, None).unwrap();
        assert_eq!(apps.default_app(), Some(1), "one app is the default, as before");
        let eu = apps.of_shard(&ShardName::parse("eu").unwrap()).unwrap();
        assert_eq!(eu.default_app(), Some(1));
        assert!(apps.of_shard(&ShardName::default()).is_none());
    }

    fn env(name: &str) -> Option<String> {
        match name {
            "GOOD" => Some(S.to_owned()),
            "SHORT" => Some("abc".to_owned()),
            _ => None,
        }
    }

    #[test]
    fn selection_by_table() {
        let one = Apps::single(app(1));
        let two = Apps::new(vec![app(1), app(2)], Some(2)).unwrap();
        let none = Apps::new(vec![app(1), app(2)], None).unwrap();
        let cases = [
            (&one, None, Selected::App(1)),
            (&one, Some(1), Selected::App(1)),
            (&one, Some(7), Selected::Unknown(7)),
            (&two, None, Selected::App(2)),
            (&two, Some(1), Selected::App(1)),
            (&none, None, Selected::NoDefault),
            (&none, Some(2), Selected::App(2)),
        ];
        for (apps, job, want) in cases {
            assert_eq!(apps.select(job), want, "{job:?}");
        }
    }

    #[test]
    fn file_entries_by_table() {
        /// The entries, and the default app they give or a piece of the error.
        type Case = (Vec<FileApp>, Result<Option<u32>, &'static str>);
        let cases: Vec<Case> = vec![
            (vec![entry(1, Some("GOOD"), false)], Ok(Some(1))),
            (
                vec![entry(1, Some("GOOD"), false), entry(2, Some("GOOD"), true)],
                Ok(Some(2)),
            ),
            (
                vec![entry(1, Some("GOOD"), false), entry(2, Some("GOOD"), false)],
                Ok(None),
            ),
            (vec![], Err("no app is configured")),
            (
                vec![entry(1, Some("GOOD"), true), entry(2, Some("GOOD"), true)],
                Err("both marked default"),
            ),
            (
                vec![entry(1, Some("GOOD"), false), entry(1, Some("GOOD"), false)],
                Err("listed twice"),
            ),
            (
                vec![entry(1, Some("UNSET"), false)],
                Err("secret_env names UNSET, which is not set"),
            ),
            (
                vec![entry(1, Some("SHORT"), false)],
                Err("its secret (env SHORT) must be exactly 32 bytes"),
            ),
            // A secret pasted where the variable's name belongs is not echoed.
            (
                vec![entry(1, Some(S), false)],
                Err("give the variable's NAME, never the secret"),
            ),
            (vec![entry(1, None, false)], Err("give secret_env")),
            (vec![entry(0, Some("GOOD"), false)], Err("must not be 0")),
            (
                vec![FileApp {
                    secret_file: Some("/nonexistent/kickq-secret".into()),
                    ..entry(1, Some("GOOD"), false)
                }],
                Err("not both"),
            ),
            (
                vec![FileApp {
                    rate: Some(0),
                    ..entry(1, Some("GOOD"), false)
                }],
                Err("rate must be at least 1"),
            ),
        ];
        for (entries, want) in cases {
            let got = Apps::from_file(&entries, 50, "https://rtc-api.zego.im", env);
            match (got, want) {
                (Ok(apps), Ok(default)) => assert_eq!(apps.default_app(), default, "{entries:?}"),
                (Err(e), Err(text)) => {
                    let e = e.to_string();
                    assert!(e.contains(text), "{entries:?}: {e}");
                    assert!(!e.contains(S), "the secret is printed: {e}");
                }
                (got, want) => panic!("{entries:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn rate_and_host_default_to_the_worker_settings() {
        let entries = vec![
            FileApp {
                rate: Some(10),
                api_url: Some("https://rtc-api-sha.zego.im".into()),
                ..entry(1, Some("GOOD"), true)
            },
            entry(2, Some("GOOD"), false),
        ];
        let apps = Apps::from_file(&entries, 40, "https://rtc-api.zego.im", env).unwrap();
        let (a, b) = (apps.get(1).unwrap(), apps.get(2).unwrap());
        assert_eq!((a.rate, a.api_url.as_str()), (10, "https://rtc-api-sha.zego.im"));
        assert_eq!((b.rate, b.api_url.as_str()), (40, "https://rtc-api.zego.im"));
        assert_eq!(b.secret_source, SecretSource::Env("GOOD".into()));
    }

    #[test]
    fn a_secret_file_is_read_without_its_newline() {
        let dir = std::env::temp_dir().join(format!("kickq-apps-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("secret");
        std::fs::write(&path, format!("{S}\n")).unwrap();
        let entries = vec![FileApp {
            secret_file: Some(path.clone()),
            ..entry(3, None, false)
        }];
        let apps = Apps::from_file(&entries, 50, "https://rtc-api.zego.im", env).unwrap();
        assert_eq!(apps.get(3).unwrap().credentials.secret.expose(), S);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
