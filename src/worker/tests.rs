//! Unit tests of `worker`.

use super::*;
use crate::config::Credentials;

/// Whatever prints the whole validated configuration (a panic message, a
/// debug log) shows no secret: not the ServerSecret, not the broker's or
/// PostgreSQL's password.
/// The bulk window holds at most ten minutes of the slowest app's calls
/// for messages of up to 100 users.
#[test]
fn the_bulk_window_is_bounded_by_the_slowest_rate() {
    let cfg = |rate: u32, max_users: usize, prefetch: u16| {
        let mut c = WorkerConfig::new(
            Secret::new("amqp://127.0.0.1"),
            Names::new("kq", crate::amqp::topology::DEFAULT_RETRY_DELAYS),
            Credentials {
                app_id: 1,
                secret: Secret::new("0123456789abcdef0123456789abcdef"),
            },
        )
        .with_rate(rate);
        c.limits.max_users_per_message = max_users;
        c.bulk_prefetch = prefetch;
        c.effective_bulk_prefetch()
    };
    // 600 s x rate x 5 users / 100 users a message.
    for (rate, max_users, prefetch, want) in [
        (50, 1000, 1000, 1000),
        (50, 1000, 5000, 1500),
        (10, 1000, 1000, 300),
        (1, 1000, 1000, 30),
        (1, 10, 1000, 300),
        (50, 1000, 20, 20),
    ] {
        assert_eq!(
            cfg(rate, max_users, prefetch),
            want,
            "rate {rate}, max users {max_users}, prefetch {prefetch}"
        );
    }
}

#[test]
fn the_configuration_prints_no_secret() {
    let secret = "s3cr3t-0123456789abcdef0123456789";
    let cfg = WorkerConfig::new(
        Secret::new("amqp://kickq:broker-pw-77@10.0.0.1:5672/%2f"),
        Names::new("kickq", crate::amqp::topology::DEFAULT_RETRY_DELAYS),
        Credentials {
            app_id: 1234567890,
            secret: Secret::new(secret),
        },
    )
    .with_ledger(Secret::new(
        "postgres://kickq:db-pw-88@db:5432/kickq?sslmode=verify-full",
    ));
    let printed = format!("{cfg:?} {cfg:#?}");
    for hidden in [secret, "broker-pw-77", "db-pw-88"] {
        assert!(!printed.contains(hidden), "{hidden} printed: {printed}");
    }
    assert!(printed.contains("[redacted]"), "{printed}");
    assert!(printed.contains("1234567890"), "the AppId is not a secret: {printed}");
}
