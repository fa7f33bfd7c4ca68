//! `kickq demo` end to end: against the real broker it drains a sample sweep, prints the summary and deletes
//! its queues (with `--keep`, all but its dead letters, which the command it prints lists); with no broker it
//! prints one line on how to get one and exits non-zero.

mod common;

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
    let listed = std::process::Command::new("rabbitmqctl")
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
