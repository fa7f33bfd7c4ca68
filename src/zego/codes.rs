//! The pure classifier from a KickoutUser outcome (return code or transport failure) to what the worker does next.

use super::client::{ApiReply, TransportError};

/// What the worker does with the users of one call after seeing its outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// The users were kicked: acknowledge them.
    Kicked,
    /// There is nothing left to kick (the room is gone, or the one user is not
    /// in it): acknowledge them as done.
    NothingToDo,
    /// Try the same call again later, with backoff.
    Retry(RetryKind),
    /// The AppId's rate limit was hit: slow down, then retry the same call.
    RateLimited,
    /// Retrying cannot help: move the users to the dead-letter queue.
    DeadLetter,
    /// Every call would fail (credentials, AppId, clock, app configuration):
    /// stop calling and alert rather than burn the queue.
    Halt,
    /// A call of several users failed for one of them (not in the room, or
    /// an input parameter error) and the API does not say which: retry the
    /// users one per call.
    SplitUsers,
    /// The API refused the length of the user list: retry in smaller calls.
    ShrinkChunk,
}

impl Disposition {
    /// Its label in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Kicked => "kicked",
            Disposition::NothingToDo => "nothing_to_do",
            Disposition::Retry(RetryKind::Transient) => "retry",
            Disposition::Retry(RetryKind::UnknownCode) => "unknown_code",
            Disposition::RateLimited => "rate_limited",
            Disposition::DeadLetter => "dead_letter",
            Disposition::Halt => "halt",
            Disposition::SplitUsers => "split_users",
            Disposition::ShrinkChunk => "shrink_chunk",
        }
    }
}

/// Why a [`Disposition::Retry`] was chosen, so metrics can tell a flaky
/// gateway from a code this build does not know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryKind {
    /// A documented "try again" code, or a transport failure.
    Transient,
    /// A code missing from the table: retried, because dead-lettering on a
    /// code the vendor added later would drop users that a retry would kick.
    UnknownCode,
}

/// How one code is decided; some codes depend on the number of users in the call.
#[derive(Debug, Clone, Copy)]
enum Rule {
    Always(Disposition),
    ByUsers { one: Disposition, several: Disposition },
}

/// One known code.
struct Row {
    code: i64,
    rule: Rule,
    meaning: &'static str,
}

const fn row(code: i64, rule: Rule, meaning: &'static str) -> Row {
    Row { code, rule, meaning }
}

use Disposition::*;
use Rule::{Always, ByUsers};

/// Every code the vendor documents for KickoutUser, with the reason for its row:
///
/// - `0`: success.
/// - `104`, `5024`, `50001`: the room does not exist. A kick's goal is that the
///   users are not in the room, which already holds.
/// - `50002`: a user is not in the room. With one user, the goal holds. With
///   several the API does not say which, and the others may still be in the
///   room, so the worker retries them one per call.
/// - `50011`: more than the API's user-list limit. Several users: retry in
///   smaller calls. One user cannot be shrunk, so the call can never succeed.
/// - `1` (busy), `5018` (room status mismatch, "try again later"),
///   `100000012` (gateway failed to read the body), `100000015` (gateway
///   internal error): the vendor's side is momentarily unwell.
/// - `7`, `206`: over the per-AppId request rate; the call itself is fine.
/// - `2`: input parameter error. The same input fails the same way forever,
///   so one user's call is dead-lettered. A call of several users is split
///   into one call per user, as for 50002: the API does not say which
///   parameter it refused, and a call merges users from several jobs, so one
///   bad id (a space, an emoji: outside the vendor's id set) must not
///   dead-letter the others. Only the users the API refuses alone are
///   dead-lettered. When the fault is in what the calls share (room, reason)
///   every single call fails too, at one call per user of the chunk (at most
///   its size, 5); validation (`kickq::job`) keeps such input from reaching
///   the API in the first place.
/// - `3`, `100000000`..`100000011` (except 12), `100000013`, `100000014`,
///   `100000016`, `100000017`: authentication, AppId, signature, clock, Host or
///   app configuration. Nothing about the users is wrong and every other call
///   would fail the same way, so the worker stops instead of dead-lettering
///   the whole queue.
const CODES: &[Row] = &[
    row(0, Always(Kicked), "success"),
    row(1, Always(Retry(RetryKind::Transient)), "server busy, retry"),
    row(
        2,
        ByUsers {
            one: DeadLetter,
            several: SplitUsers,
        },
        "input parameter error",
    ),
    row(3, Always(Halt), "authentication failed"),
    row(7, Always(RateLimited), "over the API's requests-per-second limit"),
    row(104, Always(NothingToDo), "room does not exist"),
    row(206, Always(RateLimited), "over the requests-per-second limit"),
    row(
        5018,
        Always(Retry(RetryKind::Transient)),
        "room status does not match, try later",
    ),
    row(5024, Always(NothingToDo), "room does not exist"),
    row(50001, Always(NothingToDo), "room does not exist"),
    row(
        50002,
        ByUsers {
            one: NothingToDo,
            several: SplitUsers,
        },
        "user not in the room",
    ),
    row(
        50011,
        ByUsers {
            one: DeadLetter,
            several: ShrinkChunk,
        },
        "user list longer than the limit",
    ),
    row(100000000, Always(Halt), "wrong Host header"),
    row(100000001, Always(Halt), "AppId format error"),
    row(100000002, Always(Halt), "Timestamp empty"),
    row(100000003, Always(Halt), "Timestamp malformed"),
    row(
        100000004,
        Always(Halt),
        "signature expired (clock skew over 10 minutes)",
    ),
    row(100000005, Always(Halt), "signature error"),
    row(100000006, Always(Halt), "Action empty"),
    row(100000007, Always(Halt), "Action unsupported"),
    row(100000008, Always(Halt), "SignatureNonce empty"),
    row(100000009, Always(Halt), "Signature empty"),
    row(100000010, Always(Halt), "failed to get ServerSecret (wrong AppId?)"),
    row(100000011, Always(Halt), "failed to get app configuration"),
    row(
        100000012,
        Always(Retry(RetryKind::Transient)),
        "gateway failed to read the body",
    ),
    row(100000013, Always(Halt), "SignatureVersion empty"),
    row(100000014, Always(Halt), "SignatureVersion unsupported"),
    row(
        100000015,
        Always(Retry(RetryKind::Transient)),
        "API gateway internal error",
    ),
    row(100000016, Always(Halt), "app has no production environment"),
    row(100000017, Always(Halt), "app has not activated this service"),
];

fn find(code: i64) -> Option<&'static Row> {
    CODES.iter().find(|r| r.code == code)
}

/// Decides a call's outcome. Every transport failure is transient: the
/// request may or may not have reached the API, and a kick is idempotent, so
/// sending it again is always safe.
pub fn classify(result: &Result<ApiReply, TransportError>, users_in_call: usize) -> Disposition {
    match result {
        Ok(reply) => classify_code(reply.code, users_in_call),
        Err(_) => Retry(RetryKind::Transient),
    }
}

/// Decides a return code for a call that carried `users_in_call` users.
/// Codes outside the table are [`RetryKind::UnknownCode`].
pub fn classify_code(code: i64, users_in_call: usize) -> Disposition {
    match find(code).map(|r| r.rule) {
        Some(Always(d)) => d,
        Some(ByUsers { one, several }) => {
            if users_in_call > 1 {
                several
            } else {
                one
            }
        }
        None => Retry(RetryKind::UnknownCode),
    }
}

/// Every code in the table, in table order (metrics register a zero series
/// for each).
pub fn known_codes() -> impl Iterator<Item = i64> {
    CODES.iter().map(|r| r.code)
}

/// The short meaning of a code, for dead-letter detail headers and logs;
/// `"unknown code"` for codes outside the table.
pub fn describe(code: i64) -> &'static str {
    find(code).map_or("unknown code", |r| r.meaning)
}

/// What an operator should check when a code halts an AppId: the setting
/// or the clock it points at, in words for the ERROR line.
pub fn halt_hint(code: i64) -> &'static str {
    match code {
        3 => "check the AppId and its ServerSecret (ZEGO_APP_ID, ZEGO_SERVER_SECRET or the app's secret_env)",
        100000000 => "check the API URL (ZEGO_API_URL or the app's api_url): its host must be ZEGOCLOUD's rtc-api host of the app's region",
        100000001 | 100000010 => "check the AppId (ZEGO_APP_ID or the app's app_id): it is not one ZEGOCLOUD knows",
        100000002..=100000004 => "check this host's clock (NTP): a signature's timestamp must be within 10 minutes of ZEGOCLOUD's",
        100000005 => "check the ServerSecret (ZEGO_SERVER_SECRET or the app's secret_env): the 32 characters of this AppId's own secret",
        100000006..=100000009 | 100000013 | 100000014 => {
            "the request kickq signed is malformed: a kickq bug or a change of the API; report it with this line"
        }
        100000011 | 100000016 | 100000017 => {
            "check the app in ZEGOCLOUD's console: its configuration, production environment and the server API service"
        }
        _ => "see this code in ZEGOCLOUD's return codes",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_halting_code_has_a_hint_of_its_own_kind() {
        // (code, words the hint must hold)
        let cases: &[(i64, &str)] = &[
            (3, "ServerSecret"),
            (100000000, "API URL"),
            (100000001, "AppId"),
            (100000002, "clock"),
            (100000003, "clock"),
            (100000004, "clock"),
            (100000005, "ServerSecret"),
            (100000007, "malformed"),
            (100000010, "AppId"),
            (100000017, "console"),
            (42, "return codes"),
        ];
        for (code, words) in cases {
            assert!(halt_hint(*code).contains(words), "{code}: {}", halt_hint(*code));
        }
        for r in CODES.iter().filter(|r| matches!(r.rule, Rule::Always(Halt))) {
            assert_ne!(halt_hint(r.code), halt_hint(42), "{} has a hint of its own", r.code);
        }
    }

    const T: Disposition = Retry(RetryKind::Transient);
    const U: Disposition = Retry(RetryKind::UnknownCode);

    /// (code, users in call, expected). Written out by hand from the vendor's
    /// code list rather than derived from `CODES`, so a wrong row fails here.
    const TABLE: &[(i64, usize, Disposition)] = &[
        (0, 1, Kicked),
        (0, 5, Kicked),
        (1, 3, T),
        (2, 1, DeadLetter),
        (2, 2, SplitUsers),
        (2, 5, SplitUsers),
        (3, 1, Halt),
        (7, 2, RateLimited),
        (104, 1, NothingToDo),
        (104, 5, NothingToDo),
        (206, 1, RateLimited),
        (5018, 1, T),
        (5024, 3, NothingToDo),
        (50001, 2, NothingToDo),
        (50002, 1, NothingToDo),
        (50002, 2, SplitUsers),
        (50002, 5, SplitUsers),
        (50011, 1, DeadLetter),
        (50011, 2, ShrinkChunk),
        (50011, 6, ShrinkChunk),
        (100000000, 1, Halt),
        (100000001, 1, Halt),
        (100000002, 1, Halt),
        (100000003, 1, Halt),
        (100000004, 1, Halt),
        (100000005, 1, Halt),
        (100000006, 1, Halt),
        (100000007, 1, Halt),
        (100000008, 1, Halt),
        (100000009, 1, Halt),
        (100000010, 1, Halt),
        (100000011, 1, Halt),
        (100000012, 1, T),
        (100000013, 1, Halt),
        (100000014, 1, Halt),
        (100000015, 1, T),
        (100000016, 1, Halt),
        (100000017, 1, Halt),
        (-1, 1, U),
        (4, 1, U),
        (50003, 1, U),
        (100000018, 1, U),
        (i64::MAX, 1, U),
    ];

    #[test]
    fn code_table() {
        for &(code, users, expected) in TABLE {
            assert_eq!(classify_code(code, users), expected, "code {code}, {users} user(s)");
            let reply = ApiReply {
                code,
                message: String::new(),
                request_id: String::new(),
                http_status: 200,
            };
            assert_eq!(classify(&Ok(reply), users), expected, "code {code} via classify");
        }
    }

    #[test]
    fn every_documented_code_is_in_the_test_table_and_described() {
        let tested: HashSet<i64> = TABLE.iter().map(|r| r.0).collect();
        for row in CODES {
            assert!(tested.contains(&row.code), "code {} has no test row", row.code);
            assert_ne!(describe(row.code), "unknown code");
        }
        assert_eq!(describe(424242), "unknown code");
        assert_eq!(known_codes().count(), CODES.len());
        assert!(known_codes().any(|c| c == 50001));
        assert_eq!(describe(100000004), "signature expired (clock skew over 10 minutes)");
        assert_eq!(describe(50002), "user not in the room");
    }

    #[test]
    fn every_transport_failure_is_transient() {
        let failures = [
            TransportError::Timeout,
            TransportError::Connect("refused".into()),
            TransportError::HttpStatus(500),
            TransportError::HttpStatus(404),
            TransportError::NotJson { http_status: 200 },
            TransportError::Redirect(302),
            TransportError::Other("connection reset".into()),
        ];
        for f in failures {
            assert_eq!(classify(&Err(f.clone()), 1), T, "{f:?}");
            assert_eq!(classify(&Err(f.clone()), 5), T, "{f:?}");
        }
    }
}
