//! `kickq mock-zego`: its arguments, the `--fault` value parser hook, and the serve-until-signal loop.

use crate::cli::mock_apps;
use crate::config::{ZegoArgs, DEFAULT_RATE};
use crate::job::IdCharset;
use crate::mock_zego::{parse_fault, serve, FaultRule, FaultSyntaxError, MockConfig};
use anyhow::Context;
use std::net::SocketAddr;

/// Where `kickq mock-zego` listens by default: loopback, a port of its own.
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8085";

/// Run a strict stand-in for ZEGOCLOUD's KickoutUser API, for tests and local
/// development.
///
/// It checks every request as the vendor documents (common parameters,
/// signature, 10-minute timestamp window, per-AppId rate limit, 1 to 5
/// UserId[], ids in the vendor's character set, CustomReason of at most 256
/// bytes) and answers the documented
/// return codes. It records every call and kick: GET /_mock/state for the
/// counters, GET /_mock/calls for the calls and kicked users, POST
/// /_mock/faults to replace the fault rules (JSON), POST /_mock/reset to
/// forget everything. These routes are unauthenticated: listen on loopback.
///
/// It serves the AppId of ZEGO_APP_ID (secret: ZEGO_SERVER_SECRET or
/// ZEGO_SERVER_SECRET_FILE), each --app APP_ID:SECRET_ENV, or both; every
/// AppId has its own secret and its own rate window, and any other AppId
/// answers 100000010.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct MockZegoArgs {
    /// The primary AppId, and where its secret comes from (optional with --app).
    #[command(flatten)]
    pub zego: ZegoArgs,

    /// One more AppId to serve, as APP_ID:SECRET_ENV: the AppId (a non-zero
    /// uint32) and the NAME of the environment variable holding its
    /// ServerSecret, never the secret itself (argv is visible to every user).
    /// The secret must pass the same checks as ZEGO_SERVER_SECRET (32 bytes).
    /// Repeat for several; with or instead of ZEGO_APP_ID, each AppId once.
    /// Example: --app 1234567890:APP_A_SECRET --app 987654321:APP_B_SECRET
    #[arg(long = "app", value_name = "APP_ID:SECRET_ENV")]
    pub apps: Vec<String>,

    /// Address and port to listen on.
    #[arg(long, value_name = "ADDR", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Requests allowed per AppId in any sliding second, refused ones
    /// included; the request over it answers 206. 0 means unlimited.
    #[arg(long, value_name = "PER_SEC", env = "MOCK_ZEGO_RATE_LIMIT", default_value_t = DEFAULT_RATE)]
    pub rate_limit: u32,

    /// Seconds added to the mock's clock for the timestamp check (e.g. 660 to
    /// make every caller 11 minutes behind).
    #[arg(long, value_name = "SECS", default_value_t = 0, allow_negative_numbers = true)]
    pub clock_offset: i64,

    /// A scripted fault; repeat for several, applied in order to calls that
    /// pass auth, the rate limit and the parameter checks. Comma-separated
    /// items with exactly one effect. room=GLOB picks rooms (default: every
    /// room; the wildcard * matches any run of characters). Effects: code=N
    /// (answer code N), http500 (HTML error page), latency=DURATION (delay,
    /// e.g. 500ms; adds up), hang (never answer), reset (drop the
    /// connection), users=GLOB,absent (those users are not in the room:
    /// 50002), request_id_bytes=N (answer as usual, with a RequestId of N
    /// bytes; adds to any other rule). Modifiers: first=N (only the first N matching calls),
    /// error-rate=P (fire with probability P). Examples: room=bad-*,code=2,
    /// room=flaky-*,code=1,first=3, room=slow-*,latency=500ms,
    /// room=*,http500, room=hang-*,hang, room=reset-*,reset,
    /// room=*,error-rate=0.1,code=1, users=ghost-*,absent,
    /// room=long-*,request_id_bytes=4096
    #[arg(long = "fault", value_name = "RULE", value_parser = fault_arg)]
    pub faults: Vec<FaultRule>,

    /// Characters RoomId and UserId[] may hold; any other answers 2. vendor:
    /// the vendor's documented set (digits, letters and
    /// ~!@#$%^&*()_+=-`;',.<>/\), as the SDK reference states it. any: every
    /// character but control characters, to exercise query encoding with
    /// spaces and non-ASCII ids.
    #[arg(long = "id-charset", value_name = "vendor|any", default_value_t = IdCharset::default(), value_parser = |s: &str| s.parse::<IdCharset>())]
    pub id_charset: IdCharset,

    /// Play a gateway this far away: each request waits MS (± --jitter-ms)
    /// before the rate window counts it (the gateway counts arrivals), and
    /// each answer waits as long again (drawn afresh). 0: loopback.
    #[arg(long = "one-way-ms", value_name = "MS", default_value_t = 0)]
    pub one_way_ms: u64,

    /// Jitter of each leg: a uniform draw in [-MS, +MS] added to
    /// --one-way-ms, per leg and call; at most --one-way-ms.
    #[arg(long = "jitter-ms", value_name = "MS", default_value_t = 0)]
    pub jitter_ms: u64,
}

fn fault_arg(text: &str) -> Result<FaultRule, FaultSyntaxError> {
    parse_fault(text)
}

/// Serves the mock until Ctrl-C or SIGTERM.
pub(crate) async fn run(args: MockZegoArgs) -> anyhow::Result<()> {
    // ZEGO_APP_ID, when set, needs its secret as it always did; without it
    // the --app values alone say what to serve.
    let primary = match args.zego.app_id {
        Some(_) => Some(args.zego.credentials()?),
        None => None,
    };
    let mut apps = mock_apps::resolve(primary, &args.apps, &|name| std::env::var(name))?.into_iter();
    let Some(first) = apps.next() else {
        return Err(mock_apps::AppsError::NoApp.into());
    };
    let more: Vec<_> = apps.collect();
    let app_ids: Vec<u32> = std::iter::once(first.app_id)
        .chain(more.iter().map(|a| a.app_id))
        .collect();
    let distance = crate::mock_zego::Distance::new(args.one_way_ms, args.jitter_ms).context("--jitter-ms")?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().context("listening socket has no address")?;
    if !addr.ip().is_loopback() {
        tracing::warn!(%addr, "mock-zego listens beyond loopback; its /_mock routes are unauthenticated");
    }
    tracing::info!(
        %addr,
        app_ids = ?app_ids,
        rate_limit = args.rate_limit,
        faults = args.faults.len(),
        id_charset = %args.id_charset,
        one_way_ms = args.one_way_ms,
        jitter_ms = args.jitter_ms,
        "mock-zego listening"
    );
    let cfg = MockConfig {
        app_id: first.app_id,
        secret: first.secret,
        apps: more,
        rate_limit: args.rate_limit,
        faults: args.faults,
        clock_offset_secs: args.clock_offset,
        id_charset: args.id_charset,
        distance,
    };
    serve(cfg, listener, stop_signal())
        .await
        .context("mock-zego server failed")?;
    tracing::info!("mock-zego stopped");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM (the signal process managers send).
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(err) => tracing::warn!(error = %err, "cannot watch SIGTERM; stop with Ctrl-C"),
        }
    }
    if let Err(err) = tokio::signal::ctrl_c().await {
        // Without any signal the server could never stop cleanly; run until killed.
        tracing::warn!(error = %err, "cannot watch Ctrl-C either");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_zego::FaultEffect;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: MockZegoArgs,
    }

    #[test]
    fn defaults_and_repeated_faults() {
        let cli = Cli::try_parse_from([
            "mock-zego",
            "--app-id",
            "42",
            "--fault",
            "room=bad-*,code=2",
            "--fault",
            "users=ghost-*,absent",
            "--clock-offset",
            "-660",
        ])
        .unwrap();
        let a = cli.args;
        assert_eq!(a.zego.app_id.as_deref(), Some("42"));
        assert_eq!(a.listen, DEFAULT_LISTEN.parse::<SocketAddr>().unwrap());
        assert_eq!(a.rate_limit, 50);
        assert_eq!(a.clock_offset, -660);
        assert_eq!(a.id_charset, IdCharset::Vendor);
        assert_eq!(
            a.faults,
            [
                FaultRule::new("bad-*", FaultEffect::Code(2)),
                FaultRule::new("*", FaultEffect::AbsentUsers("ghost-*".into())),
            ]
        );
    }

    #[test]
    fn id_charset_flag() {
        let parse = |v: &str| Cli::try_parse_from(["mock-zego", "--id-charset", v]).map(|c| c.args.id_charset);
        assert_eq!(parse("any").unwrap(), IdCharset::Any);
        assert_eq!(parse("vendor").unwrap(), IdCharset::Vendor);
        let err = parse("ascii").unwrap_err().to_string();
        assert!(
            err.contains("use vendor or any") && err.contains("--id-charset"),
            "{err}"
        );
    }

    #[test]
    fn bad_fault_is_a_usage_error_naming_the_problem() {
        let err = Cli::try_parse_from(["mock-zego", "--fault", "room=x,explode"])
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(text.contains("unknown item \"explode\""), "{text}");
        assert!(text.contains("--fault"), "{text}");
    }

    #[test]
    fn secret_is_not_an_argument() {
        assert!(Cli::try_parse_from(["mock-zego", "--secret", "x"]).is_err());
        assert!(Cli::try_parse_from(["mock-zego", "--server-secret", "x"]).is_err());
    }

    #[test]
    fn help_documents_the_fault_syntax_and_the_secret_source() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        for needle in [
            "room=flaky-*,code=1,first=3",
            "users=ghost-*,absent",
            "room=long-*,request_id_bytes=4096",
            "ZEGO_SERVER_SECRET",
            "MOCK_ZEGO_RATE_LIMIT",
            "--app <APP_ID:SECRET_ENV>",
            "never the secret itself",
        ] {
            assert!(help.contains(needle), "{needle} missing from:\n{help}");
        }
    }

    #[tokio::test]
    async fn run_needs_an_app_id() {
        let cli = Cli::try_parse_from(["mock-zego", "--listen", "127.0.0.1:0"]).unwrap();
        let mut args = cli.args;
        args.zego.app_id = None;
        let err = run(args).await.unwrap_err().to_string();
        assert!(err.contains("ZEGO_APP_ID is required, or at least one --app"), "{err}");
    }

    #[test]
    fn app_flag_repeats_and_keeps_values_for_run_to_check() {
        let cli = Cli::try_parse_from(["mock-zego", "--app", "1:A", "--app", "2:B", "--app", "bad"]).unwrap();
        assert_eq!(cli.args.apps, ["1:A", "2:B", "bad"]);
    }

    #[tokio::test]
    async fn run_refuses_an_app_whose_variable_is_unset() {
        let name = "KICKQ_TEST_MOCK_APP_SECRET_NEVER_SET";
        assert!(std::env::var_os(name).is_none());
        let value = format!("1:{name}");
        let cli = Cli::try_parse_from(["mock-zego", "--listen", "127.0.0.1:0", "--app", &value]).unwrap();
        let mut args = cli.args;
        args.zego.app_id = None;
        let err = run(args).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!("--app {value}: the environment variable {name} is not set")
        );
    }
}
