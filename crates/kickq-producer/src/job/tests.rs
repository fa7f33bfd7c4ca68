//! Unit tests of `job`.

use super::*;

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn limits_come_from_the_workers_variables() {
    type Case<'a> = (&'a [(&'a str, &'a str)], Result<Limits, &'a str>);
    let cases: &[Case] = &[
        (&[], Ok(Limits::default())),
        (
            &[(MAX_USERS_VAR, "50")],
            Ok(Limits {
                max_users_per_message: 50,
                ..Limits::default()
            }),
        ),
        (
            &[(MAX_USERS_VAR, " 7 "), (ID_CHARSET_VAR, "any")],
            Ok(Limits {
                max_users_per_message: 7,
                id_charset: IdCharset::Any,
            }),
        ),
        (&[(MAX_USERS_VAR, "")], Ok(Limits::default())),
        (&[(MAX_USERS_VAR, "0")], Err("KICKQ_MAX_USERS_PER_MESSAGE=\"0\"")),
        (&[(MAX_USERS_VAR, "lots")], Err("KICKQ_MAX_USERS_PER_MESSAGE=\"lots\"")),
        (
            &[(ID_CHARSET_VAR, "ascii")],
            Err("KICKQ_ID_CHARSET: \"ascii\" is not an id charset"),
        ),
    ];
    for (vars, want) in cases {
        let got = Limits::from_vars(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string()));
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{vars:?}"),
            (Err(e), Err(start)) => assert!(e.to_string().starts_with(start), "{vars:?}: {e}"),
            (got, want) => panic!("{vars:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn generated_job_ids_are_distinct_dashed_uuids() {
    let a = generate_job_id();
    let b = generate_job_id();
    assert_ne!(a, b);
    assert_eq!(a.len(), 36);
    assert_eq!(a.as_bytes()[14], b'7', "{a} is a version 7 uuid");
}

#[test]
fn accepts_minimal_and_full_messages() {
    let job = parse(br#"{"room_id":"r1","user_ids":["u1"]}"#, &limits()).unwrap();
    assert_eq!(job.room_id, "r1");
    assert_eq!(job.user_ids, vec!["u1"]);
    assert_eq!(job.reason, None);

    let job = parse(
        br#"{"room_id":"r","user_ids":["a","b","a"],"reason":"spam","app_id":7,"job_id":"j","extra":{"x":1}}"#,
        &limits(),
    )
    .unwrap();
    assert_eq!(job.user_ids, vec!["a", "b"], "duplicates fold, order kept");
    assert_eq!(job.reason.as_deref(), Some("spam"));
    assert_eq!(job.app_id, Some(7));
    assert_eq!(job.job_id.as_deref(), Some("j"));
}

#[test]
fn empty_reason_is_no_reason() {
    let job = parse(br#"{"room_id":"r","user_ids":["a"],"reason":""}"#, &limits()).unwrap();
    assert_eq!(job.reason, None);
}

#[test]
fn rejects_by_table() {
    let long = |n: usize| "x".repeat(n);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "not a job message"),
        ("[]".into(), "a job message is a JSON object"),
        (r#"["r",["a"]]"#.into(), "a job message is a JSON object"),
        (r#"{"user_ids":["a"]}"#.into(), "missing field `room_id`"),
        (r#"{"room_id":"r"}"#.into(), "missing field `user_ids`"),
        (r#"{"room_id":5,"user_ids":["a"]}"#.into(), "invalid type"),
        (r#"{"room_id":"r","user_ids":"a"}"#.into(), "invalid type"),
        (r#"{"room_id":"r","user_ids":[1]}"#.into(), "invalid type"),
        (
            r#"{"room_id":"r","user_ids":["a"],"app_id":-1}"#.into(),
            "invalid value",
        ),
        (
            r#"{"room_id":"r","user_ids":["a"],"app_id":4294967296}"#.into(),
            "invalid value",
        ),
        (
            r#"{"room_id":"","user_ids":["a"]}"#.into(),
            "room_id must be 1 to 128 bytes, got 0",
        ),
        (format!(r#"{{"room_id":"{}","user_ids":["a"]}}"#, long(129)), "got 129"),
        (r#"{"room_id":"r","user_ids":[]}"#.into(), "user_ids is empty"),
        (
            r#"{"room_id":"r","user_ids":[""]}"#.into(),
            "user_ids[0] must be 1 to 64 bytes, got 0",
        ),
        (
            format!(r#"{{"room_id":"r","user_ids":["a","{}"]}}"#, long(65)),
            "user_ids[1] must be 1 to 64 bytes, got 65",
        ),
        (
            r#"{"room_id":"r","user_ids":["a\nb"]}"#.into(),
            "user_ids[0] holds a control character",
        ),
        (
            r#"{"room_id":"r\u0000","user_ids":["a"]}"#.into(),
            "room_id holds a control character",
        ),
        (
            format!(r#"{{"room_id":"r","user_ids":["a"],"reason":"{}"}}"#, long(257)),
            "reason must be at most 256 bytes, got 257",
        ),
        (
            r#"{"room_id":"r","user_ids":["a"],"job_id":""}"#.into(),
            "job_id must be 1 to 128 bytes",
        ),
        (
            format!(r#"{{"room_id":"r","user_ids":["a"],"job_id":"{}"}}"#, long(129)),
            "job_id must be 1 to 128 bytes, got 129",
        ),
        (
            r#"{"room_id":"r","room_id":"s","user_ids":["a"]}"#.into(),
            "duplicate field",
        ),
    ];
    for (body, expected) in cases {
        let err = parse(body.as_bytes(), &limits()).expect_err(&body).to_string();
        assert!(err.contains(expected), "{body}: {err} should contain {expected}");
    }
}

#[test]
fn rejects_non_utf8_and_oversized_bodies() {
    let err = parse(b"{\"room_id\":\"\xff\",\"user_ids\":[\"a\"]}", &limits()).unwrap_err();
    assert!(matches!(err, InvalidJob::Malformed(_)), "{err}");
    let hidden = parse(
        b"{\"room_id\":\"r\",\"user_ids\":[\"a\"],\"extra\":\"\xff\"}",
        &limits(),
    )
    .unwrap_err();
    assert!(hidden.to_string().contains("not UTF-8"), "{hidden}");
    let big = vec![b' '; MAX_MESSAGE_BYTES + 1];
    assert_eq!(
        parse(&big, &limits()).unwrap_err(),
        InvalidJob::TooLarge(MAX_MESSAGE_BYTES + 1)
    );
}

#[test]
fn user_limit_is_configurable_and_boundaries_hold() {
    let users = |n: usize| (0..n).map(|i| format!("u{i}")).collect::<Vec<_>>();
    let job = |n| KickRequest {
        room_id: "r".into(),
        user_ids: users(n),
        reason: None,
        app_id: None,
        job_id: None,
        not_after: None,
    };
    assert!(validate(job(1000), &limits()).is_ok());
    assert_eq!(
        validate(job(1001), &limits()).unwrap_err(),
        InvalidJob::TooManyUsers { count: 1001, max: 1000 }
    );
    let small = Limits {
        max_users_per_message: 3,
        ..Limits::default()
    };
    assert!(validate(job(3), &small).is_ok());
    assert!(validate(job(4), &small).is_err());
    let edge = KickRequest {
        room_id: "r".repeat(128),
        user_ids: vec!["u".repeat(64)],
        reason: Some("x".repeat(256)),
        app_id: None,
        job_id: Some("j".repeat(128)),
        not_after: None,
    };
    assert!(validate(edge, &limits()).is_ok());
}

#[test]
fn hostile_but_legal_ids_pass_untouched() {
    let body = r#"{"room_id":"r&x=1#frag","user_ids":["a&UserId%5B%5D=victim","%20+#;=","..\\/'`<>"]}"#;
    let job = parse(body.as_bytes(), &limits()).unwrap();
    assert_eq!(job.room_id, "r&x=1#frag");
    assert_eq!(job.user_ids, vec!["a&UserId%5B%5D=victim", "%20+#;=", "..\\/'`<>"]);
    let any = Limits {
        id_charset: IdCharset::Any,
        ..Limits::default()
    };
    let body = r#"{"room_id":"r&x=1 #1","user_ids":["a&UserId[]=victim","é 漢 %20+#;="]}"#;
    let job = parse(body.as_bytes(), &any).unwrap();
    assert_eq!(job.user_ids, vec!["a&UserId[]=victim", "é 漢 %20+#;="]);
    assert!(
        parse(body.as_bytes(), &limits()).is_err(),
        "the same body under the vendor set"
    );
}

/// Every punctuation character ZEGOCLOUD lists, written out by hand from
/// its SDK reference rather than taken from `VENDOR_ID_CHARS`.
const VENDOR_PUNCTUATION: [char; 24] = [
    '~', '!', '@', '#', '$', '%', '^', '&', '*', '(', ')', '_', '+', '=', '-', '`', ';', '\'', ',', '.', '<', '>', '/',
    '\\',
];

fn with_ids(room: &str, user: &str, id_charset: IdCharset) -> Result<KickRequest, InvalidJob> {
    let limits = Limits {
        id_charset,
        ..Limits::default()
    };
    validate(KickRequest::new(room, ["ok", user]), &limits)
}

#[test]
fn vendor_charset_accepts_digits_letters_and_the_listed_punctuation() {
    assert_eq!(VENDOR_ID_CHARS.chars().count(), VENDOR_PUNCTUATION.len());
    let alnum = ('0'..='9').chain('a'..='z').chain('A'..='Z');
    for c in alnum.chain(VENDOR_PUNCTUATION) {
        let id = format!("x{c}y");
        assert!(with_ids("r", &id, IdCharset::Vendor).is_ok(), "user id {id:?}");
        assert!(with_ids(&id, "u", IdCharset::Vendor).is_ok(), "room id {id:?}");
        assert!(with_ids(&id, &id, IdCharset::Any).is_ok(), "{id:?} under any");
        assert!(is_vendor_id_char(c), "{c:?}");
    }
    let all: String = VENDOR_PUNCTUATION.iter().collect();
    assert!(with_ids(&all, &all, IdCharset::Vendor).is_ok(), "{all}");
}

#[test]
fn vendor_charset_refuses_by_table() {
    // (character, refused under `any` too)
    let cases: &[(char, bool)] = &[
        (' ', false),
        ('😀', false),
        ('é', false),
        ('漢', false),
        ('"', false),
        ('?', false),
        ('{', false),
        ('}', false),
        ('|', false),
        ('[', false),
        (']', false),
        (':', false),
        ('’', false),
        ('\u{a0}', false),
        ('\u{200b}', false),
        ('Ａ', false),
        ('\u{0}', true),
        ('\t', true),
        ('\n', true),
        ('\u{7f}', true),
        ('\u{85}', true),
    ];
    for &(c, control) in cases {
        let id = format!("x{c}y");
        let user = with_ids("r", &id, IdCharset::Vendor).unwrap_err();
        let room = with_ids(&id, "u", IdCharset::Vendor).unwrap_err();
        if control {
            assert_eq!(
                user,
                InvalidJob::ControlCharacter {
                    field: "user_ids[1]".into()
                },
                "{c:?}"
            );
            assert_eq!(
                room,
                InvalidJob::ControlCharacter {
                    field: "room_id".into()
                },
                "{c:?}"
            );
            assert!(with_ids(&id, &id, IdCharset::Any).is_err(), "{c:?} under any");
        } else {
            assert_eq!(
                user,
                InvalidJob::OutsideIdCharset {
                    field: "user_ids[1]".into(),
                    kind: IdKind::User,
                    found: c
                },
                "{c:?}"
            );
            assert_eq!(
                room,
                InvalidJob::OutsideIdCharset {
                    field: "room_id".into(),
                    kind: IdKind::Room,
                    found: c
                },
                "{c:?}"
            );
            assert!(with_ids(&id, &id, IdCharset::Any).is_ok(), "{c:?} under any");
        }
        assert!(!is_vendor_id_char(c), "{c:?}");
    }
}

#[test]
fn first_refused_names_the_first_bad_character() {
    let cases: &[(IdCharset, &str, Option<char>)] = &[
        (IdCharset::Vendor, "abc", None),
        (IdCharset::Vendor, "a b?c", Some(' ')),
        (IdCharset::Vendor, "a?b c", Some('?')),
        (IdCharset::Vendor, "ok😀", Some('😀')),
        (IdCharset::Any, "a b?c😀", None),
        (IdCharset::Any, "a b\u{1}c", Some('\u{1}')),
    ];
    for &(set, id, want) in cases {
        assert_eq!(set.first_refused(id), want, "{set} {id:?}");
    }
}

#[test]
fn charset_errors_name_the_rule() {
    let job = KickRequest::new("r", ["a", "b", "c", "with space😀"]);
    assert_eq!(
        validate(job, &limits()).unwrap_err().to_string(),
        "user_ids[3] has a character outside ZEGOCLOUD's user id set \
         (digits, letters and ~!@#$%^&*()_+=-`;',.<>/\\): ' '"
    );
    let job = KickRequest::new("room|1", ["a"]);
    assert_eq!(
        validate(job, &limits()).unwrap_err().to_string(),
        "room_id has a character outside ZEGOCLOUD's room id set \
         (digits, letters and ~!@#$%^&*()_+=-`;',.<>/\\): '|'"
    );
}

#[test]
fn charset_keeps_the_byte_limits_and_spares_job_ids() {
    let cases: Vec<(KickRequest, Option<InvalidJob>)> = vec![
        (KickRequest::new("\\".repeat(128), ["\\".repeat(64)]), None),
        (KickRequest::new("%".repeat(128), ["~".repeat(64)]), None),
        (
            KickRequest::new("\\".repeat(129), ["u"]),
            Some(InvalidJob::RoomIdLength(129)),
        ),
        (
            KickRequest::new("r", ["~".repeat(65)]),
            Some(InvalidJob::UserIdLength { index: 0, len: 65 }),
        ),
        (
            // Too long and outside the set: the length is reported.
            KickRequest::new("r", ["é".repeat(33)]),
            Some(InvalidJob::UserIdLength { index: 0, len: 66 }),
        ),
        (KickRequest::new("r", ["u"]).with_job_id("job 1 é?"), None),
    ];
    for (job, want) in cases {
        let text = format!("{job:?}");
        assert_eq!(validate(job, &limits()).err(), want, "{text}");
    }
}

#[test]
fn id_charset_setting_values() {
    assert_eq!("vendor".parse::<IdCharset>(), Ok(IdCharset::Vendor));
    assert_eq!("any".parse::<IdCharset>(), Ok(IdCharset::Any));
    assert_eq!(IdCharset::default(), IdCharset::Vendor);
    assert_eq!(Limits::default().id_charset, IdCharset::Vendor);
    for set in [IdCharset::Vendor, IdCharset::Any] {
        assert_eq!(set.to_string().parse::<IdCharset>(), Ok(set));
    }
    for bad in ["", "Vendor", "ANY", " any", "ascii"] {
        let err = bad.parse::<IdCharset>().unwrap_err();
        assert_eq!(err, UnknownIdCharset(bad.into()));
        assert!(err.to_string().ends_with("use vendor or any"), "{err}");
    }
}

fn at(s: &str) -> DateTime<Utc> {
    parse_not_after(s).unwrap()
}

#[test]
fn not_after_reads_rfc3339_and_refuses_the_rest_by_table() {
    let body = |v: &str| format!(r#"{{"room_id":"r","user_ids":["a"],"not_after":{v}}}"#);
    let cases: &[(&str, Result<Option<&str>, &str>)] = &[
        ("null", Ok(None)),
        (r#""2026-12-01T12:00:00Z""#, Ok(Some("2026-12-01T12:00:00Z"))),
        (r#""2026-12-01T14:00:00+02:00""#, Ok(Some("2026-12-01T12:00:00Z"))),
        (r#""2026-12-01T12:00:00.250Z""#, Ok(Some("2026-12-01T12:00:00.250Z"))),
        (
            r#""tomorrow""#,
            Err(r#"not_after must be an RFC 3339 time such as 2026-12-01T12:00:00Z, got "tomorrow""#),
        ),
        (r#""2026-12-01""#, Err(r#"got "2026-12-01""#)),
        (r#""2026-12-01 12:00:00""#, Err(r#"got "2026-12-01 12:00:00""#)),
        (r#""2026-12-01T12:00:00""#, Err("not_after must be an RFC 3339 time")),
        (r#""2026-13-01T12:00:00Z""#, Err("not_after must be an RFC 3339 time")),
        (r#""""#, Err(r#"got """#)),
        ("1764590400", Err("invalid type: integer")),
    ];
    for (value, want) in cases {
        let got = parse(body(value).as_bytes(), &limits());
        match (got, want) {
            (Ok(job), Ok(t)) => assert_eq!(job.not_after, t.map(at), "{value}"),
            (Err(e), Err(part)) => {
                assert!(matches!(e, InvalidJob::Malformed(_)), "{value}: {e:?}");
                assert!(e.to_string().contains(part), "{value}: {e}");
            }
            (got, want) => panic!("{value}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn expired_only_after_the_deadline_by_table() {
    let deadline = at("2026-12-01T12:00:00Z");
    let cases: &[(Option<DateTime<Utc>>, &str, bool)] = &[
        (None, "2099-01-01T00:00:00Z", false),
        (Some(deadline), "2026-12-01T11:59:59.999Z", false),
        (Some(deadline), "2026-12-01T12:00:00Z", false),
        (Some(deadline), "2026-12-01T12:00:00.001Z", true),
        (Some(deadline), "2027-01-01T00:00:00Z", true),
    ];
    for &(not_after, now, want) in cases {
        let job = KickRequest {
            not_after,
            ..KickRequest::new("r", ["a"])
        };
        assert_eq!(job.expired_at(at(now)), want, "{not_after:?} at {now}");
    }
}

#[test]
fn not_after_survives_the_body_and_a_retry_split() {
    let job = KickRequest::new("r", ["a", "b"]).with_not_after(at("2026-12-01T14:00:00+02:00"));
    let body = String::from_utf8(job.to_body()).unwrap();
    assert!(body.contains(r#""not_after":"2026-12-01T12:00:00Z""#), "{body}");
    let again = parse(&job.with_users(vec!["b".into()]).to_body(), &limits()).unwrap();
    assert_eq!(again.not_after, Some(at("2026-12-01T12:00:00Z")));
    let none = String::from_utf8(KickRequest::new("r", ["a"]).to_body()).unwrap();
    assert!(!none.contains("not_after"), "{none}");
}

#[test]
fn round_trips_through_the_body() {
    let job = parse(
        br#"{"room_id":"r","user_ids":["a"],"reason":"x","job_id":"j"}"#,
        &limits(),
    )
    .unwrap();
    let again = parse(&job.with_users(vec!["b".into()]).to_body(), &limits()).unwrap();
    assert_eq!(again.user_ids, vec!["b"]);
    assert_eq!(again.job_id.as_deref(), Some("j"));
    assert_eq!(again.reason.as_deref(), Some("x"));
}
