//! The `kickq` binary: parse the command line, set up logging, and call into the library. Nothing else.

use clap::{Parser, Subcommand, ValueEnum};
use std::io::IsTerminal;
use std::process::ExitCode;

/// kickq: kick users from ZEGOCLOUD rooms from a RabbitMQ queue, coalesced,
/// rate-limited, audited, and never lost.
///
/// Start with `kickq demo`. Secrets (ZEGO_SERVER_SECRET or
/// ZEGO_SERVER_SECRET_FILE) are read from the environment only.
#[derive(Parser)]
#[command(name = "kickq", version, about, long_about)]
struct Cli {
    /// Log format: pretty on a terminal, json otherwise (by default).
    #[arg(long = "log-format", env = "KICKQ_LOG_FORMAT", global = true)]
    log_format: Option<LogFormat>,
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
    Demo(kickq::cli::demo::DemoArgs),
    /// Drain the requests queue: coalesce, rate-limit, call KickoutUser, route outcomes.
    Run(Box<kickq::cli::run::RunArgs>),
    /// Publish kick jobs: one from flags, or a CSV / JSON Lines file, validated, grouped and confirmed.
    #[command(long_about = kickq::cli::enqueue::LONG_ABOUT)]
    Enqueue(Box<kickq::cli::enqueue::EnqueueArgs>),
    /// List, replay or purge dead letters, without ever losing one.
    #[command(long_about = kickq::cli::dlq::LONG_ABOUT)]
    Dlq(kickq::cli::dlq::DlqArgs),
    /// Serve a strict stand-in for ZEGOCLOUD's KickoutUser API (tests, demo, bench).
    MockZego(kickq::cli::mock_zego::MockZegoArgs),
    /// Apply the audit ledger's database migrations.
    Migrate(kickq::cli::migrate::MigrateArgs),
    /// Show what happened to kicks in a room, newest first, from the audit ledger.
    History(kickq::cli::history::HistoryArgs),
    /// Maintain the audit ledger (retention).
    Ledger(kickq::cli::ledger::LedgerArgs),
    /// Measure kickq against a naive baseline on the local broker and an in-process mock; print figures and targets.
    Bench(Box<kickq::cli::bench::BenchArgs>),
}

fn init_tracing(format: Option<LogFormat>, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = match format {
        Some(LogFormat::Json) => true,
        Some(LogFormat::Pretty) => false,
        None => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}

/// The environment variable behind the flag a clap error names (`for
/// '--rate <RATE>'`), so the one error line names the setting however it
/// was given.
fn env_of_flag(message: &str) -> Option<String> {
    use clap::CommandFactory;
    let flag = message.split("for '--").nth(1)?.split([' ', '\'']).next()?;
    fn find(cmd: &clap::Command, flag: &str) -> Option<String> {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .and_then(|a| a.get_env().map(|e| e.to_string_lossy().into_owned()))
            .or_else(|| cmd.get_subcommands().find_map(|c| find(c, flag)))
    }
    find(&Cli::command(), flag)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line that names the setting, as the README promises.
            let text = e.render().to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ");
            match env_of_flag(first) {
                Some(env) => eprintln!("kickq: {first} (from {env} or the flag)"),
                None => eprintln!("kickq: {first}"),
            }
            return ExitCode::from(2);
        }
    };
    // The bench runs workers in-process: their info lines would bury its table.
    let default_filter = if matches!(cli.command, Command::Bench(_)) {
        "warn"
    } else {
        "info"
    };
    init_tracing(cli.log_format, default_filter);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime only fails when the OS refuses threads");
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => kickq::cli::demo::run(a).await,
            Command::Run(a) => kickq::cli::run::run(*a).await,
            Command::Enqueue(a) => kickq::cli::enqueue::run(*a).await,
            Command::Dlq(a) => kickq::cli::dlq::run(a).await,
            Command::MockZego(a) => kickq::cli::mock_zego::run(a).await,
            Command::Migrate(a) => kickq::cli::migrate::run(a).await,
            Command::History(a) => kickq::cli::history::run(a).await,
            Command::Ledger(a) => kickq::cli::ledger::run(a).await,
            Command::Bench(a) => kickq::cli::bench::run(*a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.downcast_ref::<kickq::cli::Interrupted>().is_some() => ExitCode::from(130),
        Err(e) => {
            // `{:#}` prints the context chain on one line.
            eprintln!("kickq: {e:#}");
            ExitCode::FAILURE
        }
    }
}
