//! The config file meets the command line: `--config`/`KICKQ_CONFIG` is found before clap parses, and each
//! of the file's settings becomes the default of the argument whose environment variable it names, so a flag
//! and an environment variable override the file, and one value parser validates all three.

use crate::config::file::{ConfigFile, FileError, CONFIG_ENV};
use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::PathBuf;

/// The config file named by `--config FILE` / `--config=FILE` in `args`, else
/// by `KICKQ_CONFIG` (via `env`). Pure, for tests.
pub(crate) fn config_path(args: &[OsString], env: Option<OsString>) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(rest) = a.to_str().and_then(|s| s.strip_prefix("--config=")) {
            return Some(PathBuf::from(rest));
        }
    }
    env.filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Reads the config file, if one is named.
pub(crate) fn load(args: &[OsString]) -> Result<Option<ConfigFile>, FileError> {
    match config_path(args, std::env::var_os(CONFIG_ENV)) {
        Some(path) => ConfigFile::read(&path).map(Some),
        None => Ok(None),
    }
}

/// `cmd` with the file's settings as defaults of every (sub)command's
/// arguments that have the matching environment variable. A setting that
/// matches no argument anywhere is refused.
pub(crate) fn apply(cmd: clap::Command, file: &ConfigFile) -> Result<clap::Command, FileError> {
    let mut used = BTreeSet::new();
    let cmd = apply_to(cmd, file, &mut used);
    match file.settings.keys().find(|k| !used.contains(*k)) {
        Some(key) => Err(FileError::Unknown {
            path: file.path.clone(),
            key: key.clone(),
        }),
        None => Ok(cmd),
    }
}

fn apply_to(mut cmd: clap::Command, file: &ConfigFile, used: &mut BTreeSet<String>) -> clap::Command {
    let targets: Vec<(clap::Id, String)> = cmd
        .get_arguments()
        .filter_map(|a| {
            let env = a.get_env()?.to_str()?;
            let key = ConfigFile::key_of(env);
            (env != CONFIG_ENV && file.settings.contains_key(&key)).then(|| (a.get_id().clone(), key))
        })
        .collect();
    for (id, key) in targets {
        let value = file.settings[&key].clone();
        cmd = cmd.mut_arg(id, |a| a.default_value(value));
        used.insert(key);
    }
    let names: Vec<String> = cmd.get_subcommands().map(|s| s.get_name().to_owned()).collect();
    for name in names {
        cmd = cmd.mut_subcommand(name, |sub| apply_to(sub, file, used));
    }
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_path_comes_from_the_flag_then_the_environment() {
        let env = || Some(OsString::from("env.toml"));
        let cases: &[(&[&str], Option<OsString>, Option<&str>)] = &[
            (&["kickq", "run", "--config", "a.toml"], env(), Some("a.toml")),
            (&["kickq", "--config=b.toml", "run"], env(), Some("b.toml")),
            (&["kickq", "run"], env(), Some("env.toml")),
            (&["kickq", "run"], None, None),
            (&["kickq", "run"], Some(OsString::new()), None),
            (&["kickq", "enqueue", "--", "--config", "x"], None, None),
        ];
        for (argv, env, want) in cases {
            assert_eq!(
                config_path(&args(argv), env.clone()),
                want.map(PathBuf::from),
                "{argv:?}"
            );
        }
    }

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        cmd: Sub,
    }
    #[derive(clap::Subcommand, Debug)]
    enum Sub {
        Run {
            #[arg(long, env = "KICKQ_TEST_SETTINGS_PREFETCH", default_value_t = 20000)]
            prefetch: u16,
            #[arg(long, env = "KICKQ_TEST_SETTINGS_NAMESPACE", default_value = "kickq")]
            namespace: String,
        },
    }

    fn file(text: &str) -> ConfigFile {
        ConfigFile::parse(Path::new("kickq.toml"), text).unwrap()
    }

    /// Precedence: flag over environment over file over the built-in default.
    #[test]
    fn flags_and_env_override_the_file() {
        use clap::{CommandFactory, FromArgMatches};
        let f = file("test_settings_prefetch = 100\ntest_settings_namespace = \"fromfile\"\n");
        let parse = |argv: &[&str]| {
            let m = apply(Cli::command(), &f).unwrap().try_get_matches_from(argv).unwrap();
            match Cli::from_arg_matches(&m).unwrap().cmd {
                Sub::Run { prefetch, namespace } => (prefetch, namespace),
            }
        };
        assert_eq!(parse(&["kickq", "run"]), (100, "fromfile".into()));
        assert_eq!(parse(&["kickq", "run", "--prefetch", "7"]), (7, "fromfile".into()));
        // The environment is not set here (tests run in parallel); env over
        // file is tested through the binary in tests/it/cli.rs.
    }

    #[test]
    fn a_file_value_is_validated_by_the_flag_parser() {
        use clap::CommandFactory;
        let f = file("test_settings_prefetch = 70000\n");
        let err = apply(Cli::command(), &f)
            .unwrap()
            .try_get_matches_from(["kickq", "run"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("70000"), "{err}");
    }

    #[test]
    fn an_unknown_setting_is_refused_by_name() {
        use clap::CommandFactory;
        let f = file("test_settings_prefetch = 1\nprefecth = 2\n");
        let err = apply(Cli::command(), &f).unwrap_err().to_string();
        assert!(err.contains("unknown setting `prefecth`"), "{err}");
    }
}
