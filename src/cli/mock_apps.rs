//! `kickq mock-zego --app APP_ID:SECRET_ENV`: the value's syntax, and the list of AppIds the mock serves, built from `--app` and ZEGO_APP_ID with each secret read from the environment.

use crate::config::{read_secret, ConfigError, Credentials};
use crate::mock_zego::MockApp;
use std::env::VarError;

/// One `--app` value, syntax-checked: an AppId and the NAME of the
/// environment variable that holds its ServerSecret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppArg {
    /// The AppId, a non-zero uint32.
    pub(crate) app_id: u32,
    /// The variable holding its secret.
    pub(crate) secret_env: EnvName,
}

pub(crate) use crate::config::EnvName;

/// Why the `--app` values (with ZEGO_APP_ID) give no usable list of AppIds.
/// `Display` is the one line `kickq` prints; it never holds a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AppsError {
    /// A value without `:`; not echoed, as it may be a pasted secret.
    #[error("--app takes APP_ID:SECRET_ENV, an AppId and the NAME of the environment variable holding its ServerSecret (never the secret itself); a value has no ':'")]
    NoColon,
    /// The part before `:` is not a non-zero uint32.
    #[error("--app {shown}:...: the AppId must be a non-zero uint32")]
    BadAppId {
        /// The AppId as given, or its length when longer than any uint32.
        shown: String,
    },
    /// Nothing after `:`.
    #[error("--app {app_id}: the environment variable name after ':' is empty")]
    EmptyName {
        /// The AppId.
        app_id: u32,
    },
    /// A name no environment variable can have; not echoed.
    #[error("--app {app_id}:...: the environment variable name holds '=' or a NUL, which no variable name can")]
    BadName {
        /// The AppId.
        app_id: u32,
    },
    /// The named variable is not set.
    #[error("--app {app_id}:{name}: the environment variable {name} is not set")]
    Unset {
        /// The AppId.
        app_id: u32,
        /// The variable.
        name: EnvName,
    },
    /// The variable's value fails the ServerSecret rules ZEGO_SERVER_SECRET is held to.
    #[error("--app {app_id}:{name}: {name} is invalid: {why}")]
    BadSecret {
        /// The AppId.
        app_id: u32,
        /// The variable.
        name: EnvName,
        /// What is wrong, never the value.
        why: String,
    },
    /// The same AppId given twice.
    #[error("AppId {app_id} is given twice ({how}); each AppId has one secret and one rate window")]
    Duplicate {
        /// The AppId.
        app_id: u32,
        /// Where: twice in `--app`, or in `--app` and ZEGO_APP_ID.
        how: &'static str,
    },
    /// Neither ZEGO_APP_ID nor any `--app`.
    #[error("ZEGO_APP_ID is required, or at least one --app APP_ID:SECRET_ENV")]
    NoApp,
}

/// The most digits a uint32 has; a longer AppId is not echoed in an error.
const MAX_APP_ID_DIGITS: usize = 10;

/// Checks one `--app` value's syntax: `APP_ID:SECRET_ENV`, split at the
/// first `:`, the AppId digits only and non-zero, the name non-empty and
/// without `=` or NUL.
pub(crate) fn parse_app(value: &str) -> Result<AppArg, AppsError> {
    let (id, name) = value.split_once(':').ok_or(AppsError::NoColon)?;
    let app_id = Some(id)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|id| id.parse::<u32>().ok())
        .filter(|&id| id != 0)
        .ok_or_else(|| AppsError::BadAppId {
            shown: if id.len() <= MAX_APP_ID_DIGITS {
                format!("{id:?}")
            } else {
                format!("<{} characters>", id.len())
            },
        })?;
    if name.is_empty() {
        return Err(AppsError::EmptyName { app_id });
    }
    if name.contains(['=', '\0']) {
        return Err(AppsError::BadName { app_id });
    }
    Ok(AppArg {
        app_id,
        secret_env: EnvName(name.to_owned()),
    })
}

/// Every AppId the mock serves, in order: `primary` (from ZEGO_APP_ID, when
/// set) first, then each `--app` value, its secret read through `env` (the
/// process environment in `kickq`) and validated as ZEGO_SERVER_SECRET is.
/// Never empty.
pub(crate) fn resolve(
    primary: Option<Credentials>,
    values: &[String],
    env: &dyn Fn(&str) -> Result<String, VarError>,
) -> Result<Vec<MockApp>, AppsError> {
    let mut apps: Vec<MockApp> = primary
        .map(|c| MockApp {
            app_id: c.app_id,
            secret: c.secret,
        })
        .into_iter()
        .collect();
    let from_env = !apps.is_empty();
    for value in values {
        let AppArg { app_id, secret_env } = parse_app(value)?;
        if let Some(i) = apps.iter().position(|a| a.app_id == app_id) {
            let how = if i == 0 && from_env {
                "in --app and ZEGO_APP_ID"
            } else {
                "in --app twice"
            };
            return Err(AppsError::Duplicate { app_id, how });
        }
        let bad = |why: String| AppsError::BadSecret {
            app_id,
            name: secret_env.clone(),
            why,
        };
        let raw = match env(&secret_env.0) {
            Ok(raw) => raw,
            Err(VarError::NotPresent) => {
                return Err(AppsError::Unset {
                    app_id,
                    name: secret_env,
                })
            }
            Err(VarError::NotUnicode(_)) => return Err(bad("is not UTF-8".into())),
        };
        let secret = read_secret(Some(raw), None).map_err(|e| match e {
            ConfigError::Invalid { why, .. } => bad(why),
            other => bad(other.to_string()),
        })?;
        apps.push(MockApp { app_id, secret });
    }
    if apps.is_empty() {
        return Err(AppsError::NoApp);
    }
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    const S32: &str = "0123456789abcdef0123456789abcdef";
    const T32: &str = "fedcba9876543210fedcba9876543210";

    #[test]
    fn parse_table() {
        let ok = |app_id, name: &str| {
            Ok(AppArg {
                app_id,
                secret_env: EnvName(name.into()),
            })
        };
        let cases: Vec<(&str, Result<AppArg, AppsError>)> = vec![
            ("1234567890:APP_A_SECRET", ok(1234567890, "APP_A_SECRET")),
            ("1:x", ok(1, "x")),
            ("4294967295:S", ok(4294967295, "S")),
            ("007:S", ok(7, "S")),
            ("1:NAME:WITH:COLONS", ok(1, "NAME:WITH:COLONS")),
            ("1234567890", Err(AppsError::NoColon)),
            ("", Err(AppsError::NoColon)),
            (S32, Err(AppsError::NoColon)),
            (":S", Err(AppsError::BadAppId { shown: "\"\"".into() })),
            ("0:S", Err(AppsError::BadAppId { shown: "\"0\"".into() })),
            ("+1:S", Err(AppsError::BadAppId { shown: "\"+1\"".into() })),
            (" 1:S", Err(AppsError::BadAppId { shown: "\" 1\"".into() })),
            (
                "abc:S",
                Err(AppsError::BadAppId {
                    shown: "\"abc\"".into(),
                }),
            ),
            (
                "4294967296:S",
                Err(AppsError::BadAppId {
                    shown: "\"4294967296\"".into(),
                }),
            ),
            (
                "12345678901:S",
                Err(AppsError::BadAppId {
                    shown: "<11 characters>".into(),
                }),
            ),
            ("1:", Err(AppsError::EmptyName { app_id: 1 })),
            ("1:A=B", Err(AppsError::BadName { app_id: 1 })),
            ("1:A\0B", Err(AppsError::BadName { app_id: 1 })),
        ];
        for (value, want) in cases {
            assert_eq!(parse_app(value), want, "{value:?}");
        }
    }

    /// An environment holding these variables only.
    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Result<String, VarError> {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
                .ok_or(VarError::NotPresent)
        }
    }

    fn ids(apps: &[MockApp]) -> Vec<(u32, Secret)> {
        apps.iter().map(|a| (a.app_id, a.secret.clone())).collect()
    }

    fn values(list: &[&str]) -> Vec<String> {
        list.iter().map(|v| (*v).to_owned()).collect()
    }

    #[test]
    fn resolve_table() {
        const ENV: &[(&str, &str)] = &[("A", S32), ("B", T32), ("SHORT", "abc"), ("EMPTY", "")];
        let env = env_of(ENV);
        let primary = || {
            Some(Credentials {
                app_id: 9,
                secret: Secret::new(T32),
            })
        };
        let app = |id, s: &str| (id, Secret::new(s));
        assert_eq!(
            ids(&resolve(None, &values(&["1:A", "2:B"]), &env).unwrap()),
            [app(1, S32), app(2, T32)]
        );
        assert_eq!(
            ids(&resolve(primary(), &values(&["1:A"]), &env).unwrap()),
            [app(9, T32), app(1, S32)],
            "ZEGO_APP_ID first, then --app"
        );
        assert_eq!(ids(&resolve(primary(), &[], &env).unwrap()), [app(9, T32)]);
        let errors: Vec<(Option<Credentials>, Vec<String>, AppsError)> = vec![
            (None, vec![], AppsError::NoApp),
            (
                None,
                values(&["1:NOPE"]),
                AppsError::Unset {
                    app_id: 1,
                    name: EnvName("NOPE".into()),
                },
            ),
            (
                None,
                values(&["1:A", "1:B"]),
                AppsError::Duplicate {
                    app_id: 1,
                    how: "in --app twice",
                },
            ),
            (
                primary(),
                values(&["9:A"]),
                AppsError::Duplicate {
                    app_id: 9,
                    how: "in --app and ZEGO_APP_ID",
                },
            ),
            (
                primary(),
                values(&["1:A", "1:B"]),
                AppsError::Duplicate {
                    app_id: 1,
                    how: "in --app twice",
                },
            ),
            (None, values(&["1:A", "x"]), AppsError::NoColon),
        ];
        for (primary, vals, want) in errors {
            assert_eq!(resolve(primary, &vals, &env).err(), Some(want), "{vals:?}");
        }
        for (value, why) in [("1:SHORT", "must be exactly 32 bytes"), ("1:EMPTY", "is empty")] {
            let err = resolve(None, &values(&[value]), &env).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, AppsError::BadSecret { app_id: 1, .. }), "{err:?}");
            assert!(text.contains(why) && !text.contains("abc"), "{text}");
        }
    }

    #[test]
    fn messages_name_the_variable_but_never_a_secret_pasted_in_its_place() {
        let env = env_of(&[]);
        let unset = resolve(None, &values(&["1:NOPE"]), &env).unwrap_err().to_string();
        assert_eq!(unset, "--app 1:NOPE: the environment variable NOPE is not set");
        let pasted = resolve(None, &values(&[&format!("1:{S32}")]), &env)
            .unwrap_err()
            .to_string();
        assert!(!pasted.contains(S32) && pasted.contains("never the secret"), "{pasted}");
        let no_colon = parse_app(S32).unwrap_err().to_string();
        assert!(
            !no_colon.contains(S32) && no_colon.contains("APP_ID:SECRET_ENV"),
            "{no_colon}"
        );
        let not_utf8 = |_: &str| Err(VarError::NotUnicode(std::ffi::OsString::from("x")));
        let err = resolve(None, &values(&["1:A"]), &not_utf8).unwrap_err().to_string();
        assert_eq!(err, "--app 1:A: A is invalid: is not UTF-8");
    }
}
