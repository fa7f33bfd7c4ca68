//! The mock's decision for one API request: runs the checks in the vendor's order (auth, rate limit, parameters, faults, room state) and records the outcome.
//!
//! Pure apart from its own state: time and randomness come in as arguments,
//! so the whole pipeline is tested without a socket.

use super::config::{DuplicateAppId, MockConfig, UnknownAppId};
use super::faults::{self, FaultRule, Terminal};
use super::state::{Answer, CallLog, CallRecord, Counters, Records};
use super::verify::{self, Param, OK, USER_NOT_IN_ROOM};
use super::window::SlidingWindow;
use crate::job::IdCharset;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

/// What the HTTP layer must send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum HttpReply {
    /// HTTP 200 with the API's JSON.
    Json {
        /// Return code.
        code: i64,
        /// Fresh, unique `RequestId`.
        request_id: String,
    },
    /// HTTP 500 with an HTML page.
    Http500,
    /// No answer until shutdown.
    Hang,
    /// Drop the connection.
    Reset,
}

/// An outcome and how long to wait before producing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Reply {
    /// Added latency from fault rules.
    pub latency: Duration,
    /// What to send.
    pub outcome: HttpReply,
}

/// One AppId the mock serves.
#[derive(Debug)]
struct App {
    secret: Secret,
    /// Arrivals that passed this AppId's auth, for its rate limit: each
    /// AppId has a sliding second of its own.
    rate_window: SlidingWindow,
}

/// The mock's whole mutable state; the server keeps it under one lock so that
/// arrival order, the rate windows and the records always agree.
#[derive(Debug)]
pub(super) struct Engine {
    /// Every AppId served; any other answers 100000010.
    apps: BTreeMap<u32, App>,
    /// The AppId [`Engine::set_secret`] changes.
    primary: u32,
    rate_limit: u32,
    clock_offset_secs: i64,
    id_charset: IdCharset,
    faults: Vec<FaultRule>,
    /// Calls matched per rule, same length as `faults`.
    fault_matches: Vec<u64>,
    records: Records,
    request_prefix: String,
    request_seq: u64,
}

impl Engine {
    /// A fresh engine for `cfg`; an AppId named twice is refused.
    pub(super) fn new(cfg: &MockConfig) -> Result<Self, DuplicateAppId> {
        let apps = cfg
            .secrets()?
            .into_iter()
            .map(|(app_id, secret)| {
                let rate_window = SlidingWindow::new(Duration::from_secs(1));
                (app_id, App { secret, rate_window })
            })
            .collect();
        Ok(Self {
            apps,
            primary: cfg.app_id,
            rate_limit: cfg.rate_limit,
            clock_offset_secs: cfg.clock_offset_secs,
            id_charset: cfg.id_charset,
            fault_matches: vec![0; cfg.faults.len()],
            faults: cfg.faults.clone(),
            records: Records::default(),
            request_prefix: hex::encode(rand::random::<[u8; 4]>()),
            request_seq: 0,
        })
    }

    /// Decides and records one request. `now` is monotonic time since the
    /// mock started (non-decreasing across calls); `system_unix` is the wall
    /// clock before the test offset; `roll` feeds probabilistic fault rules.
    pub(super) fn handle(
        &mut self,
        raw_query: &str,
        now: Duration,
        system_unix: i64,
        roll: &mut dyn FnMut() -> f64,
    ) -> Reply {
        let at_ms = self.records.arrive(now);
        let q = verify::parse_query(raw_query);
        let one = |p: &Param| match p {
            Param::One(v) => Some(v.clone()),
            _ => None,
        };
        let mut record = CallRecord {
            at_ms,
            at_us: u64::try_from(now.as_micros()).unwrap_or(u64::MAX),
            app_id: None,
            room_id: one(&q.room_id),
            user_ids: q.user_ids.clone(),
            reason: one(&q.reason),
            code: None,
            http_status: None,
        };
        let clock = system_unix.saturating_add(self.clock_offset_secs);
        let secret_of = |app_id| self.apps.get(&app_id).map(|app| &app.secret);
        let (app_id, app) = match verify::check_auth(&q, secret_of, clock) {
            Ok(app_id) => match self.apps.get_mut(&app_id) {
                Some(app) => (app_id, app),
                // check_auth passes only AppIds it had a secret for.
                None => return self.finish(record, Answer::Code(verify::UNKNOWN_APP_ID), Duration::ZERO, None),
            },
            Err(code) => return self.finish(record, Answer::Code(code), Duration::ZERO, None),
        };
        record.app_id = Some(app_id);
        // Every authenticated request counts, refused ones included: the
        // vendor's limit is on requests, not on successes. The window is
        // this AppId's alone: another app's traffic never fills it.
        let in_window = app.rate_window.record(now);
        self.records.authenticated(app_id, in_window);
        if self.rate_limit > 0 && in_window > self.rate_limit as usize {
            return self.finish(record, Answer::RateLimited, Duration::ZERO, None);
        }
        let call = match verify::check_call(&q, self.id_charset) {
            Ok(call) => call,
            Err(code) => return self.finish(record, Answer::Code(code), Duration::ZERO, None),
        };
        let plan = faults::plan(
            &self.faults,
            &mut self.fault_matches,
            &call.room_id,
            &call.user_ids,
            roll,
        );
        let answer = match plan.terminal {
            Some(Terminal::Code(code)) => Answer::Code(code),
            Some(Terminal::Http500) => Answer::Http500,
            Some(Terminal::Hang) => Answer::Hang,
            Some(Terminal::Reset) => Answer::Reset,
            None if plan.absent => Answer::Code(USER_NOT_IN_ROOM),
            None => {
                self.records
                    .kick(app_id, &call.room_id, &call.user_ids, call.reason.as_deref());
                Answer::Code(OK)
            }
        };
        self.finish(record, answer, plan.latency, plan.request_id_bytes)
    }

    fn finish(
        &mut self,
        mut record: CallRecord,
        answer: Answer,
        latency: Duration,
        request_id_bytes: Option<usize>,
    ) -> Reply {
        let outcome = match answer {
            Answer::Code(code) => self.json(code, request_id_bytes),
            Answer::RateLimited => self.json(verify::RATE_LIMITED, request_id_bytes),
            Answer::Http500 => HttpReply::Http500,
            Answer::Hang => HttpReply::Hang,
            Answer::Reset => HttpReply::Reset,
        };
        (record.code, record.http_status) = match &outcome {
            HttpReply::Json { code, .. } => (Some(*code), Some(200)),
            HttpReply::Http500 => (None, Some(500)),
            HttpReply::Hang | HttpReply::Reset => (None, None),
        };
        self.records.record(record, answer);
        Reply { latency, outcome }
    }

    /// A JSON answer with a fresh `RequestId`, padded or cut to `bytes` when
    /// a request-id fault fired.
    fn json(&mut self, code: i64, bytes: Option<usize>) -> HttpReply {
        self.request_seq += 1;
        let mut request_id = format!("mock-{}-{:08}", self.request_prefix, self.request_seq);
        if let Some(n) = bytes {
            request_id = sized_request_id(request_id, n);
        }
        HttpReply::Json { code, request_id }
    }

    /// Replaces the fault rules and restarts their match counts.
    pub(super) fn set_faults(&mut self, rules: Vec<FaultRule>) {
        self.fault_matches = vec![0; rules.len()];
        self.faults = rules;
    }

    /// Replaces the primary AppId's ServerSecret.
    pub(super) fn set_secret(&mut self, secret: Secret) {
        if let Some(app) = self.apps.get_mut(&self.primary) {
            app.secret = secret;
        }
    }

    /// Replaces the ServerSecret of `app_id`, one of the AppIds served.
    pub(super) fn set_app_secret(&mut self, app_id: u32, secret: Secret) -> Result<(), UnknownAppId> {
        let app = self.apps.get_mut(&app_id).ok_or(UnknownAppId(app_id))?;
        app.secret = secret;
        Ok(())
    }

    /// Sets the offset added to the system clock for the timestamp check.
    pub(super) fn set_clock_offset(&mut self, secs: i64) {
        self.clock_offset_secs = secs;
    }

    /// Sets the requests allowed per sliding second; 0 is unlimited.
    pub(super) fn set_rate_limit(&mut self, per_sec: u32) {
        self.rate_limit = per_sec;
    }

    /// Sets which characters room and user ids may hold.
    pub(super) fn set_id_charset(&mut self, charset: IdCharset) {
        self.id_charset = charset;
    }

    /// The counters.
    pub(super) fn counters(&self) -> Counters {
        self.records.counters()
    }

    /// The call and kick log.
    pub(super) fn log(&self) -> &CallLog {
        self.records.log()
    }

    /// Forgets calls, kicks, counters, the rate windows and the fault rules'
    /// match counts; keeps the configuration and the rules.
    pub(super) fn reset(&mut self) {
        self.records.reset();
        self.apps.values_mut().for_each(|app| app.rate_window.clear());
        self.fault_matches.iter_mut().for_each(|m| *m = 0);
    }
}

/// `id` made exactly `n` bytes long: cut (the id is ASCII), or padded with
/// `-` and random hex, so the tail looks like an id and does not compress
/// (PostgreSQL compresses long index entries: a repetitive filler would fit
/// an index that a real, random one overflows).
fn sized_request_id(mut id: String, n: usize) -> String {
    if id.len() < n {
        id.push('-');
    }
    while id.len() < n {
        id.push_str(&hex::encode(rand::random::<[u8; 16]>()));
    }
    id.truncate(n);
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mock_zego::faults::FaultEffect;
    use crate::zego::signature;

    const APP: u32 = 1234567890;
    const NOW: i64 = 1_700_000_000;

    fn config(rate_limit: u32, faults: Vec<FaultRule>) -> MockConfig {
        MockConfig {
            app_id: APP,
            secret: Secret::new("s3cret"),
            apps: Vec::new(),
            rate_limit,
            faults,
            clock_offset_secs: 0,
            id_charset: IdCharset::Vendor,
            distance: Default::default(),
        }
    }

    fn signed(room: &str, users: &[&str], secret: &str, ts: i64) -> String {
        signed_as(APP, room, users, secret, ts)
    }

    fn signed_as(app: u32, room: &str, users: &[&str], secret: &str, ts: i64) -> String {
        let nonce = "0011223344556677";
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        q.append_pair("Action", "KickoutUser")
            .append_pair("AppId", &app.to_string())
            .append_pair("SignatureNonce", nonce)
            .append_pair("Timestamp", &ts.to_string())
            .append_pair("Signature", &signature(app, nonce, &Secret::new(secret), ts))
            .append_pair("SignatureVersion", "2.0")
            .append_pair("RoomId", room);
        for u in users {
            q.append_pair("UserId[]", u);
        }
        q.finish()
    }

    /// A one-user kick signed for `app` with `secret`.
    fn signed_for(app: u32, room: &str, secret: &str, ts: i64) -> String {
        signed_as(app, room, &["a"], secret, ts)
    }

    fn code(reply: &Reply) -> Option<i64> {
        match &reply.outcome {
            HttpReply::Json { code, .. } => Some(*code),
            _ => None,
        }
    }

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn pipeline_table() {
        let faults = vec![
            FaultRule::new("slow-*", FaultEffect::LatencyMs(250)),
            FaultRule::new("bad-*", FaultEffect::Code(2)),
            FaultRule::new("boom-*", FaultEffect::Http500),
            FaultRule::new("hang-*", FaultEffect::Hang),
            FaultRule::new("reset-*", FaultEffect::Reset),
            FaultRule::new("*", FaultEffect::AbsentUsers("ghost-*".into())),
        ];
        let mut e = Engine::new(&config(0, faults)).unwrap();
        let json = |c| HttpReply::Json {
            code: c,
            request_id: String::new(),
        };
        let cases: Vec<(&str, String, HttpReply, u64)> = vec![
            ("kick", signed("r", &["a", "b"], "s3cret", NOW), json(0), 0),
            ("wrong secret", signed("r", &["a"], "other", NOW), json(100000005), 0),
            ("stale", signed("r", &["a"], "s3cret", NOW - 660), json(100000004), 0),
            (
                "six users",
                signed("r", &["1", "2", "3", "4", "5", "6"], "s3cret", NOW),
                json(50011),
                0,
            ),
            ("slow kick", signed("slow-1", &["c"], "s3cret", NOW), json(0), 250),
            ("fixed code", signed("bad-1", &["d"], "s3cret", NOW), json(2), 0),
            (
                "slow and bad",
                signed("slow-bad-1", &["d"], "s3cret", NOW),
                json(0),
                250,
            ),
            (
                "http 500",
                signed("boom-1", &["e"], "s3cret", NOW),
                HttpReply::Http500,
                0,
            ),
            ("hang", signed("hang-1", &["e"], "s3cret", NOW), HttpReply::Hang, 0),
            ("reset", signed("reset-1", &["e"], "s3cret", NOW), HttpReply::Reset, 0),
            ("absent", signed("r", &["f", "ghost-1"], "s3cret", NOW), json(50002), 0),
            ("no query", String::new(), json(100000006), 0),
        ];
        for (i, (name, query, want, latency)) in cases.iter().enumerate() {
            let reply = e.handle(query, at(i as u64 * 10), NOW, &mut || 0.0);
            let got = match reply.outcome {
                HttpReply::Json { code, .. } => json(code),
                other => other,
            };
            assert_eq!(&got, want, "{name}");
            assert_eq!(reply.latency, at(*latency), "{name}");
        }
        let kicked: Vec<(String, String)> = e
            .log()
            .kicked
            .iter()
            .map(|k| (k.room_id.clone(), k.user_id.clone()))
            .collect();
        let pair = |r: &str, u: &str| (r.to_owned(), u.to_owned());
        assert_eq!(
            kicked,
            [
                pair("r", "a"),
                pair("r", "b"),
                pair("slow-1", "c"),
                pair("slow-bad-1", "d")
            ]
        );
        let calls = &e.log().calls;
        assert_eq!(calls.len(), cases.len());
        assert_eq!(calls[1].app_id, None, "a failed signature has no verified AppId");
        assert_eq!(calls[0].app_id, Some(APP));
        assert_eq!((calls[7].code, calls[7].http_status), (None, Some(500)));
        assert_eq!((calls[8].code, calls[8].http_status), (None, None));
        let c = e.counters();
        assert_eq!((c.calls, c.http_errors, c.hangs, c.resets), (12, 1, 1, 1));
        assert_eq!(c.by_code.get(&0), Some(&3));
    }

    #[test]
    fn ids_outside_the_vendor_set_answer_2_before_any_fault_unless_any() {
        let mut e = Engine::new(&config(0, vec![FaultRule::new("*", FaultEffect::Code(1))])).unwrap();
        let code_of = |e: &mut Engine, room: &str, users: &[&str]| {
            code(&e.handle(&signed(room, users, "s3cret", NOW), at(0), NOW, &mut || 0.0))
        };
        assert_eq!(code_of(&mut e, "r", &["good", "with space😀"]), Some(2));
        assert_eq!(code_of(&mut e, "room 1", &["good"]), Some(2));
        assert_eq!(
            code_of(&mut e, "r", &["good"]),
            Some(1),
            "a legal call reaches the faults"
        );
        e.set_faults(Vec::new());
        assert!(e.log().kicked.is_empty());
        e.set_id_charset(IdCharset::Any);
        assert_eq!(code_of(&mut e, "room 1", &["good", "with space😀"]), Some(0));
        assert_eq!(
            code_of(&mut e, "r", &["a\u{1}"]),
            Some(2),
            "any still refuses control characters"
        );
        let kicked: Vec<&str> = e.log().kicked.iter().map(|k| k.user_id.as_str()).collect();
        assert_eq!(kicked, ["good", "with space😀"]);
        let recorded = &e.log().calls[0];
        assert_eq!(
            (recorded.code, recorded.user_ids.len()),
            (Some(2), 2),
            "the refused call is recorded"
        );
    }

    #[test]
    fn rate_limit_counts_every_authenticated_request_in_a_sliding_second() {
        let mut e = Engine::new(&config(3, vec![])).unwrap();
        let ok = signed("r", &["a"], "s3cret", NOW);
        let bad = signed("r", &["a"], "wrong", NOW);
        let mut codes = Vec::new();
        for (ms, q) in [
            (0, &ok),
            (100, &bad),
            (200, &ok),
            (300, &ok),
            (400, &ok),
            (1000, &ok),
            (1250, &ok),
            (1301, &ok),
        ] {
            codes.push(code(&e.handle(q, at(ms), NOW, &mut || 0.0)).unwrap());
        }
        // 0, 200, 300 fill the window (the bad signature does not count); 400
        // is the 4th in a second. Refused requests count too, so the window
        // stays full: at 1000 it holds 200, 300, 400 and itself; at 1250, 300,
        // 400, 1000 and itself; at 1301, 400, 1000, 1250 and itself.
        assert_eq!(codes, [0, 100000005, 0, 0, 206, 206, 206, 206]);
        assert_eq!(e.counters().rate_limited, 4);
        e.set_rate_limit(0);
        assert_eq!(code(&e.handle(&ok, at(1302), NOW, &mut || 0.0)), Some(0));
    }

    const OTHER: u32 = 42;

    fn two_apps(rate_limit: u32) -> Engine {
        let mut cfg = config(rate_limit, vec![]);
        cfg.apps.push(super::super::MockApp {
            app_id: OTHER,
            secret: Secret::new("other-secret"),
        });
        Engine::new(&cfg).unwrap()
    }

    #[test]
    fn each_app_has_its_own_sliding_second() {
        let mut e = two_apps(2);
        let a = signed_for(APP, "r", "s3cret", NOW);
        let b = signed_for(OTHER, "r", "other-secret", NOW);
        // (ms, query, code): A fills its window; B's calls in the same
        // second are all answered, and B's own window fills on its own.
        let table: [(u64, &String, i64); 9] = [
            (0, &a, 0),
            (10, &a, 0),
            (20, &a, 206),
            (30, &b, 0),
            (40, &a, 206),
            (50, &b, 0),
            (60, &b, 206),
            // 0 to 40 have left A's second (refused ones count while in it).
            (1041, &a, 0),
            // 30 has left B's, 50 and 60 have not: 1045 is its third.
            (1045, &b, 206),
        ];
        let codes: Vec<i64> = table
            .iter()
            .map(|(ms, q, _)| code(&e.handle(q, at(*ms), NOW, &mut || 0.0)).unwrap())
            .collect();
        let want: Vec<i64> = table.iter().map(|(_, _, c)| *c).collect();
        assert_eq!(codes, want);
        let c = e.counters();
        assert_eq!((c.by_app[&APP].calls, c.by_app[&APP].rate_limited), (5, 2));
        assert_eq!((c.by_app[&OTHER].calls, c.by_app[&OTHER].rate_limited), (4, 2));
        assert_eq!(c.by_app[&APP].max_calls_in_1s, 4);
        assert_eq!(c.rate_limited, 4);
        let apps: Vec<Option<u32>> = e.log().calls.iter().map(|r| r.app_id).collect();
        assert_eq!(apps[..4], [Some(APP), Some(APP), Some(APP), Some(OTHER)]);
        let kicked: Vec<u32> = e.log().kicked.iter().map(|k| k.app_id).collect();
        assert_eq!(kicked, [APP, APP, OTHER, OTHER, APP]);
    }

    #[test]
    fn unknown_app_and_each_apps_secret() {
        let mut e = two_apps(0);
        let cases = [
            ("A with A's secret", signed_for(APP, "r", "s3cret", NOW), 0),
            ("B with B's secret", signed_for(OTHER, "r", "other-secret", NOW), 0),
            (
                "A with B's secret",
                signed_for(APP, "r", "other-secret", NOW),
                100000005,
            ),
            ("B with A's secret", signed_for(OTHER, "r", "s3cret", NOW), 100000005),
            ("unknown app", signed_for(7, "r", "s3cret", NOW), 100000010),
        ];
        for (i, (name, q, want)) in cases.iter().enumerate() {
            assert_eq!(
                code(&e.handle(q, at(i as u64), NOW, &mut || 0.0)),
                Some(*want),
                "{name}"
            );
        }
        let c = e.counters();
        assert_eq!(c.by_app.keys().copied().collect::<Vec<_>>(), [OTHER, APP]);
        assert_eq!(c.calls, 5);

        e.set_app_secret(OTHER, Secret::new("rotated")).unwrap();
        let code_of = |e: &mut Engine, q: &str| code(&e.handle(q, at(10), NOW, &mut || 0.0));
        assert_eq!(
            code_of(&mut e, &signed_for(OTHER, "r", "other-secret", NOW)),
            Some(100000005)
        );
        assert_eq!(code_of(&mut e, &signed_for(OTHER, "r", "rotated", NOW)), Some(0));
        assert_eq!(
            code_of(&mut e, &signed_for(APP, "r", "s3cret", NOW)),
            Some(0),
            "A keeps its secret"
        );
        assert_eq!(e.set_app_secret(7, Secret::new("x")), Err(UnknownAppId(7)));
        e.set_secret(Secret::new("primary-rotated"));
        assert_eq!(code_of(&mut e, &signed_for(APP, "r", "primary-rotated", NOW)), Some(0));
        assert_eq!(
            code_of(&mut e, &signed_for(OTHER, "r", "rotated", NOW)),
            Some(0),
            "set_secret is the primary's"
        );
    }

    #[test]
    fn an_app_named_twice_is_refused() {
        let mut cfg = config(0, vec![]);
        let app = |app_id| super::super::MockApp {
            app_id,
            secret: Secret::new("x"),
        };
        cfg.apps = vec![app(OTHER), app(APP)];
        assert_eq!(Engine::new(&cfg).err(), Some(DuplicateAppId(APP)));
        cfg.apps = vec![app(OTHER), app(OTHER)];
        assert_eq!(Engine::new(&cfg).err(), Some(DuplicateAppId(OTHER)));
        cfg.apps = vec![app(OTHER), app(7)];
        assert!(Engine::new(&cfg).is_ok());
    }

    #[test]
    fn setters_and_reset() {
        let mut e = Engine::new(&config(0, vec![])).unwrap();
        let q = signed("r", &["a"], "s3cret", NOW);
        e.set_clock_offset(11 * 60);
        assert_eq!(code(&e.handle(&q, at(0), NOW, &mut || 0.0)), Some(100000004));
        e.set_clock_offset(-11 * 60);
        assert_eq!(code(&e.handle(&q, at(1), NOW, &mut || 0.0)), Some(100000004));
        e.set_clock_offset(0);
        e.set_secret(Secret::new("rotated"));
        assert_eq!(code(&e.handle(&q, at(2), NOW, &mut || 0.0)), Some(100000005));
        e.set_secret(Secret::new("s3cret"));
        let mut flaky = FaultRule::new("*", FaultEffect::Code(1));
        flaky.first = Some(1);
        e.set_faults(vec![flaky]);
        assert_eq!(code(&e.handle(&q, at(3), NOW, &mut || 0.0)), Some(1));
        assert_eq!(code(&e.handle(&q, at(4), NOW, &mut || 0.0)), Some(0));
        e.reset();
        assert_eq!(e.counters(), Counters::default());
        assert!(e.log().calls.is_empty());
        assert_eq!(
            code(&e.handle(&q, at(5), NOW, &mut || 0.0)),
            Some(1),
            "reset restarts first-N"
        );
    }

    #[test]
    fn request_ids_are_unique() {
        let mut e = Engine::new(&config(0, vec![])).unwrap();
        let ids: std::collections::HashSet<String> = (0..100)
            .map(|i| match e.handle("", at(i), NOW, &mut || 0.0).outcome {
                HttpReply::Json { request_id, .. } => request_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids.len(), 100);
    }

    #[test]
    fn a_request_id_fault_sizes_the_id_of_a_normal_answer() {
        let rule = FaultRule::new("long-*", FaultEffect::RequestIdBytes(4096));
        let mut e = Engine::new(&config(0, vec![rule])).unwrap();
        let reply = e.handle(&signed("long-1", &["a"], "s3cret", NOW), at(0), NOW, &mut || 0.0);
        let HttpReply::Json { code, request_id } = reply.outcome else {
            panic!("{reply:?}")
        };
        assert_eq!(code, 0, "the call succeeds");
        assert_eq!(request_id.len(), 4096);
        assert!(request_id.starts_with("mock-") && request_id.is_ascii(), "{request_id}");
        assert_eq!(e.log().kicked.len(), 1, "the user is kicked");
        let other = e.handle(&signed("short", &["a"], "s3cret", NOW), at(1), NOW, &mut || 0.0);
        assert!(matches!(other.outcome, HttpReply::Json { request_id, .. } if request_id.len() < 64));
        for n in [0, 1, 5, 22, 23, 24, 100] {
            assert_eq!(sized_request_id("mock-abcd1234-00000001".into(), n).len(), n, "{n}");
        }
    }
}
