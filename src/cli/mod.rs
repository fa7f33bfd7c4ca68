//! The command line: `main` (parse, logging, dispatch, exit codes) and one file per subcommand with its clap
//! arguments and `run`. The only place `anyhow` is used; everything below it returns typed errors.

#[cfg(feature = "bench")]
pub(crate) mod bench;
pub(crate) mod check;
pub(crate) mod confirm;
pub(crate) mod demo;
pub(crate) mod dlq;
pub(crate) mod docs;
pub(crate) mod enqueue;
pub(crate) mod events;
pub(crate) mod flags;
pub(crate) mod history;
pub(crate) mod ledger;
pub(crate) mod migrate;
pub(crate) mod mock_apps;
pub(crate) mod mock_zego;
pub(crate) mod print_config;
pub(crate) mod progress;
pub(crate) mod run;
pub(crate) mod settings;
pub(crate) mod signals;
pub(crate) mod status;

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;

/// kickq: kick users from ZEGOCLOUD rooms from a RabbitMQ queue, coalesced,
/// rate-limited, audited, and never lost.
///
/// Start with `kickq demo`. Secrets (ZEGO_SERVER_SECRET or
/// ZEGO_SERVER_SECRET_FILE) are read from the environment only.
#[derive(Parser)]
#[command(name = "kickq", version = crate::VERSION, about, long_about)]
struct Cli {
    /// Log format: pretty on a terminal, json otherwise (by default).
    #[arg(long = "log-format", env = "KICKQ_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,
    /// Config file (TOML): any setting by its environment variable's name,
    /// lower-case, without KICKQ_, and the [[apps]] the worker serves. Flags
    /// and environment variables override it.
    #[arg(long, env = "KICKQ_CONFIG", global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Pretty,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run a sample sweep against an in-process mock API, in queues of its own; start here.
    Demo(crate::cli::demo::DemoArgs),
    /// Drain the requests queue: coalesce, rate-limit, call KickoutUser, route outcomes.
    Run(Box<crate::cli::run::RunArgs>),
    /// Publish kick jobs: one from flags, or a CSV / JSON Lines file, validated, grouped and confirmed.
    #[command(long_about = crate::cli::enqueue::LONG_ABOUT)]
    Enqueue(Box<crate::cli::enqueue::EnqueueArgs>),
    /// List, replay or purge dead letters, without ever losing one.
    #[command(long_about = crate::cli::dlq::LONG_ABOUT)]
    Dlq(crate::cli::dlq::DlqArgs),
    /// Watch outcome events (`kickq events tail`): what each finished delivery became, live.
    Events(crate::cli::events::EventsArgs),
    /// Serve a strict stand-in for ZEGOCLOUD's KickoutUser API (tests, demo, bench).
    MockZego(crate::cli::mock_zego::MockZegoArgs),
    /// Apply the audit ledger's database migrations.
    Migrate(crate::cli::migrate::MigrateArgs),
    /// Show what happened to kicks in a room, newest first, from the audit ledger.
    History(crate::cli::history::HistoryArgs),
    /// Maintain the audit ledger (retention).
    Ledger(crate::cli::ledger::LedgerArgs),
    #[cfg(feature = "bench")]
    /// Measure kickq against a naive baseline on the local broker and an in-process mock; print figures and targets.
    Bench(Box<crate::cli::bench::BenchArgs>),
    /// Verify a deployment before traffic: broker, queue arguments, database, API credentials. Declares nothing.
    #[command(long_about = crate::cli::check::LONG_ABOUT)]
    Check(Box<crate::cli::check::CheckArgs>),
    /// Show queue depths, consumers, and each reachable worker's role, halts, backlog and calls/s.
    #[command(long_about = crate::cli::status::LONG_ABOUT)]
    Status(Box<crate::cli::status::StatusArgs>),
    /// Print a shell completion script (bash, zsh, fish) to stdout.
    Completions(crate::cli::docs::CompletionsArgs),
    /// Print the man page (roff) to stdout.
    Man(crate::cli::docs::ManArgs),
}

fn init_tracing(format: Option<LogFormat>, default_filter: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    // sqlx reports PostgreSQL notices (such as `relation "_sqlx_migrations"
    // already exists` on every start) at INFO: they are not ours to report.
    // lapin logs every broker failure itself, up to three times over, before
    // kickq reports it once with the host and the setting to fix: by default
    // only kickq's line shows (RUST_LOG=lapin=debug brings lapin's back).
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{default_filter},sqlx::postgres::notice=warn,lapin=off")));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let layer = if json {
        fmt::layer()
            .with_writer(|| crate::table::SafeLines {
                inner: std::io::stderr(),
                json: true,
            })
            .json()
            .flatten_event(true)
            .boxed()
    } else {
        // Colours only on a terminal: `--log-format pretty` into a file or a
        // pipe writes no ANSI escapes.
        fmt::layer()
            .with_writer(|| crate::table::SafeLines {
                inner: std::io::stderr(),
                json: false,
            })
            .with_ansi(std::io::stderr().is_terminal())
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layer.with_filter(crate::cli::signals::quiet_closing_channels()))
        .init();
}

/// The environment variable behind the flag a clap error is about (its
/// `InvalidArg` context, `--rate <RATE>`), so the one error line names the
/// setting however it was given.
fn env_of_flag(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue};
    use clap::CommandFactory;
    let arg = match e.get(ContextKind::InvalidArg)? {
        ContextValue::String(arg) => arg.as_str(),
        _ => return None,
    };
    let flag = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    fn find(cmd: &clap::Command, flag: &str) -> Option<String> {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .or_else(|| cmd.get_subcommands().find_map(|c| find(c, flag)))
    }
    find(&Cli::command(), flag)
}

/// Prints a clap error and returns exit code 2. An invalid value of a setting
/// that has an environment variable is one line naming it, as the README
/// promises; every other usage error (missing or unknown arguments,
/// conflicts, "did you mean" tips) prints whole, as clap renders it.
fn usage_error(e: &clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::InvalidValue | ErrorKind::ValueValidation) {
        let text = e.render().to_string();
        let first = text
            .lines()
            .next()
            .unwrap_or("invalid arguments")
            .trim_start_matches("error: ");
        if let Some(env) = env_of_flag(e) {
            eprintln!("kickq: {first} (from {env} or the flag)");
            return ExitCode::from(2);
        }
    }
    let _ = e.print();
    ExitCode::from(2)
}

/// The `kickq` binary: parses the command line, sets up logging, runs the
/// subcommand, and turns its end into the exit code the README documents
/// (0, 1, 2 for bad arguments, 130 when interrupted).
pub fn main() -> ExitCode {
    use clap::{CommandFactory, FromArgMatches};
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let file = match crate::cli::settings::load(&args) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("kickq: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = match &file {
        None => Cli::command(),
        Some(f) => match crate::cli::settings::apply(Cli::command(), f) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("kickq: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    let cli = match command
        .try_get_matches_from(&args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e),
    };
    let default_filter = match &cli.command {
        // The bench runs workers in-process: their info lines would bury its table.
        #[cfg(feature = "bench")]
        Command::Bench(_) => "warn",
        // On a terminal the demo draws its progress bar on stderr and says
        // what happened itself: the worker's info lines would drown the bar
        // (RUST_LOG=info brings them back).
        Command::Demo(_) if std::io::stderr().is_terminal() && std::io::stdout().is_terminal() => "warn",
        _ => "info",
    };
    init_tracing(cli.log_format, default_filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime only fails when the OS refuses threads");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => crate::cli::demo::run(a).await,
            Command::Run(a) => crate::cli::run::run(*a, file.as_ref()).await,
            Command::Enqueue(a) => crate::cli::enqueue::run(*a, file.as_ref()).await,
            Command::Dlq(a) => crate::cli::dlq::run(a, file.as_ref()).await,
            Command::Events(a) => crate::cli::events::run(a).await,
            Command::MockZego(a) => crate::cli::mock_zego::run(a).await,
            Command::Migrate(a) => crate::cli::migrate::run(a).await,
            Command::History(a) => crate::cli::history::run(a).await,
            Command::Ledger(a) => crate::cli::ledger::run(a).await,
            #[cfg(feature = "bench")]
            Command::Bench(a) => crate::cli::bench::run(*a).await,
            Command::Check(a) => crate::cli::check::run(*a, file.as_ref()).await,
            Command::Status(a) => crate::cli::status::run(*a, file.as_ref()).await,
            Command::Completions(a) => {
                crate::cli::docs::completions(Cli::command(), a.shell, &mut std::io::stdout());
                Ok(())
            }
            Command::Man(a) => crate::cli::docs::man(Cli::command(), &a, &mut std::io::stdout()),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<crate::cli::signals::Interrupted>().is_some() => ExitCode::from(130),
        // A usage error only found once the arguments are combined (e.g. `enqueue --group-size` above the limit).
        Err(e) if e.is::<clap::Error>() => usage_error(e.downcast_ref::<clap::Error>().expect("checked just above")),
        Err(e) => {
            // `{:#}` prints the context chain on one line.
            eprintln!("kickq: {e:#}");
            ExitCode::FAILURE
        }
    }
}
