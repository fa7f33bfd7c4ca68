//! `kickq demo` end to end: against the real broker it drains a sample sweep, prints the summary and deletes
//! its queues; with no broker it prints one line on how to get one and exits non-zero.

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
    // Its queues are gone: a passive declare fails.
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["list_queues", "--quiet", "name"])
        .output()
        .expect("rabbitmqctl");
    let queues = String::from_utf8_lossy(&listed.stdout);
    assert!(!queues.contains(ns), "demo queues left behind: {queues}");
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
