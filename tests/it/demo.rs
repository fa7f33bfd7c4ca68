//! `kickq demo` end to end: against the real broker it drains a sample sweep, prints the summary and deletes
//! its queues (with `--keep`, all but its dead letters, which the command it prints lists); with no broker it
//! prints one line on how to get one and exits non-zero.

use crate::common;

#[test]
fn the_demo_runs_end_to_end_and_cleans_up() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .arg("demo")
        .env("KICKQ_AMQP_URL", common::amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kickq demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("users kicked          2372"), "{stdout}");
    assert!(
        stdout.contains("rate-limit answers") && stdout.contains(", 0 rate-limit answers"),
        "{stdout}"
    );
    assert!(
        stdout.contains("validation") && stdout.contains("permanent"),
        "{stdout}"
    );
    let ns = stdout
        .split_whitespace()
        .find(|w| w.starts_with("kickq-demo-"))
        .and_then(|w| w.strip_suffix(".*"))
        .expect("the demo names its namespace");
    let queues = queues();
    assert!(!queues.contains(ns), "demo queues left behind: {queues}");
}

fn queues() -> String {
    let listed = common::rabbitmqctl_command()
        .args(["list_queues", "--quiet", "name"])
        .output()
        .expect("rabbitmqctl");
    String::from_utf8_lossy(&listed.stdout).into_owned()
}

#[test]
fn with_keep_the_demo_leaves_its_dead_letters_and_says_how_to_list_them() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["demo", "--keep"])
        .env("KICKQ_AMQP_URL", common::amqp_url())
        .env("RUST_LOG", "warn")
        .output()
        .expect("run kickq demo --keep");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ns = stdout
        .split_whitespace()
        .find(|w| w.starts_with("kickq-demo-"))
        .and_then(|w| w.strip_suffix(".*"))
        .expect("the demo names its namespace")
        .to_owned();
    // Deletes whatever the demo left, even if an assertion fails.
    let _cleanup = common::Ns::for_names(kickq::testkit::topology::Names::new(&ns, &[]));
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let command = format!("kickq dlq list --namespace {ns}");
    let line = stdout
        .lines()
        .find(|l| l.trim() == command)
        .unwrap_or_else(|| panic!("prints `{command}` on a line of its own: {stdout}"));
    let left: Vec<String> = queues()
        .lines()
        .filter(|q| q.starts_with(&format!("{ns}.")))
        .map(str::to_owned)
        .collect();
    assert_eq!(left, [format!("{ns}.dead")], "only the dead letters' queue stays");

    // The printed command, as printed, shows the letters.
    let argv: Vec<&str> = line.split_whitespace().skip(1).collect();
    let list = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(&argv)
        .env("KICKQ_AMQP_URL", common::amqp_url())
        .env_remove("KICKQ_NAMESPACE")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&list.stdout);
    let stderr = String::from_utf8_lossy(&list.stderr);
    assert!(list.status.success(), "{stderr}");
    assert!(stderr.contains("53 of 53 letter(s)"), "{stderr}");
    assert!(
        listed.contains("permanent") && listed.contains("validation"),
        "{listed}"
    );
}

#[test]
fn without_a_broker_the_demo_says_how_to_get_one() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
        .arg("demo")
        .env("KICKQ_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/%2f")
        .output()
        .expect("run kickq demo");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("docker compose up -d rabbitmq"), "{stderr}");
    assert!(!lines[0].contains("guest:guest"), "the password is redacted: {stderr}");
}

/// `kickq demo --console`: the URL and a token of this run are printed, the console answers with it (and
/// refuses another), it stays up after the sweep until SIGTERM, and then the token file and the queues go.
#[tokio::test]
async fn with_console_the_demo_serves_the_console_until_stopped() {
    use std::io::BufRead;
    let mut child = common::ChildGuard(
        std::process::Command::new(env!("CARGO_BIN_EXE_kickq"))
            .args(["demo", "--console", "--console-addr", "127.0.0.1:0"])
            .env("KICKQ_AMQP_URL", common::amqp_url())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("run kickq demo --console"),
    );
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = child.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next_line_with = |what: &str| -> String {
        loop {
            let line = rx
                .recv_timeout(std::time::Duration::from_secs(120))
                .unwrap_or_else(|_| panic!("no line with {what:?}"));
            if line.contains(what) {
                return line;
            }
        }
    };
    let ns = next_line_with("queues kickq-demo-");
    let ns = ns
        .split_whitespace()
        .find_map(|w| w.strip_prefix("kickq-demo-").and_then(|w| w.strip_suffix(".*")))
        .map(|pid| format!("kickq-demo-{pid}"))
        .expect("the demo names its namespace");
    let line = next_line_with("login token for this run: ");
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the console's URL")
        .to_owned();
    let token = line.rsplit(' ').next().unwrap().to_owned();
    assert!(!url.ends_with(":0/"), "the bound port is printed: {url}");
    assert_eq!(token.len(), 64, "{line}");
    let token_file = std::env::temp_dir().join(format!("{ns}.console-token"));
    assert!(token_file.exists(), "{token_file:?}");
    kickq::zego::client::install_crypto_provider();
    // No pooled connection: the console closes one idle for its header
    // timeout, which may cross a request on it.
    let http = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let get = |bearer: String| {
        http.get(&url)
            .header("authorization", format!("Bearer {bearer}"))
            .send()
    };
    let page = get(token.clone()).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("AppId 1234567890"));
    assert_eq!(get("not-it".into()).await.unwrap().status(), 401);
    let done = next_line_with("sweep done");
    assert!(done.contains(&url), "{done}");
    // Still up after the sweep, until a signal.
    assert_eq!(get(token.clone()).await.unwrap().status(), 200);
    common::send_signal(child.0.id(), "TERM");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!token_file.exists(), "the token file is deleted");
    assert!(!queues().contains(&ns), "demo queues left behind");
}

/// On a terminal the demo's progress bar is not drowned by the worker's
/// info lines: without RUST_LOG only warnings and errors are logged.
#[test]
fn on_a_terminal_the_progress_bar_is_not_drowned_by_log_lines() {
    let command = format!("{} demo", env!("CARGO_BIN_EXE_kickq"));
    let out = std::process::Command::new("script")
        .args(["--quiet", "--return", "--command", &command, "/dev/null"])
        .env("KICKQ_AMQP_URL", common::amqp_url())
        .env_remove("RUST_LOG")
        .env_remove("KICKQ_LOG_FORMAT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux script runs");
    let screen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("kicked") && screen.contains("users kicked"), "{screen}");
    assert!(
        !screen.contains(" INFO ") && !screen.contains("\"level\":\"INFO\""),
        "no info line on the terminal: {screen}"
    );
}
