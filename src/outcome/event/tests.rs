//! Table tests of the outcome rule, the event id and the body's shape, and the README's example bodies.

use super::*;

fn dead(error: DeadError) -> Verdict {
    Verdict::DeadLettered {
        error,
        code: None,
        detail: String::new(),
    }
}

#[test]
fn outcome_rule_by_table() {
    use Verdict::*;
    let exp = || dead(DeadError::Expired);
    let perm = || dead(DeadError::Permanent);
    let cases: Vec<(Vec<Verdict>, Outcome)> = vec![
        (vec![Kicked], Outcome::Kicked),
        (vec![Kicked, NothingToDo, AlreadyDone], Outcome::Kicked),
        (vec![AlreadyDone], Outcome::Kicked),
        (vec![NothingToDo], Outcome::Kicked),
        (vec![], Outcome::Kicked),
        (vec![Kicked, Retrying], Outcome::Retrying),
        (vec![Retrying], Outcome::Retrying),
        (vec![Retrying, Kicked, perm()], Outcome::Partial),
        (vec![Kicked, perm()], Outcome::Partial),
        (vec![Kicked, exp()], Outcome::Partial),
        (vec![perm()], Outcome::Failed),
        (vec![perm(), dead(DeadError::RetriesExhausted)], Outcome::Failed),
        // A mix of expired and other dead letters is failed, by the general rule.
        (vec![exp(), perm()], Outcome::Failed),
        (vec![exp()], Outcome::Expired),
        (vec![exp(), exp()], Outcome::Expired),
    ];
    for (verdicts, want) in cases {
        assert_eq!(outcome_of(&verdicts), want, "{verdicts:?}");
    }
}

#[test]
fn outcomes_parse_and_print_by_table() {
    for o in Outcome::ALL {
        assert_eq!(o.as_str().parse::<Outcome>(), Ok(o));
        assert_eq!(serde_json::to_value(o).unwrap(), serde_json::json!(o.as_str()));
    }
    assert_eq!("Kicked".parse::<Outcome>(), Err(UnknownOutcome("Kicked".into())));
    assert_eq!("".parse::<Outcome>(), Err(UnknownOutcome("".into())));
}

#[test]
fn binding_keys_by_table() {
    let cases: &[(Option<Outcome>, Option<&str>, &str)] = &[
        (None, None, "#"),
        (Some(Outcome::Failed), None, "failed.*"),
        (None, Some("1234567890"), "*.1234567890"),
        (Some(Outcome::Kicked), Some("unknown"), "kicked.unknown"),
    ];
    for (o, a, want) in cases {
        assert_eq!(binding_key(*o, *a), *want);
    }
}

fn parts(outcome: Outcome) -> IdParts<'static> {
    IdParts {
        namespace: "kickq",
        job_key: "job-1",
        attempts: 0,
        rate_limited: 0,
        halted_ms: 0,
        users: vec!["a", "b"],
        outcome,
    }
}

#[test]
fn event_ids_are_stable_and_change_with_each_part() {
    let base = event_id(&parts(Outcome::Kicked));
    assert_eq!(
        base,
        event_id(&parts(Outcome::Kicked)),
        "the same outcome repeats its id"
    );
    let reordered = IdParts {
        users: vec!["b", "a"],
        ..parts(Outcome::Kicked)
    };
    assert_eq!(base, event_id(&reordered), "user order does not matter");
    let uuid = uuid::Uuid::parse_str(&base).unwrap();
    assert_eq!(uuid.get_version_num(), 3);
    let changed: Vec<IdParts<'static>> = vec![
        parts(Outcome::Retrying),
        IdParts {
            namespace: "other",
            ..parts(Outcome::Kicked)
        },
        IdParts {
            job_key: "job-2",
            ..parts(Outcome::Kicked)
        },
        IdParts {
            attempts: 1,
            ..parts(Outcome::Kicked)
        },
        IdParts {
            rate_limited: 1,
            ..parts(Outcome::Kicked)
        },
        IdParts {
            halted_ms: 30_000,
            ..parts(Outcome::Kicked)
        },
        IdParts {
            users: vec!["a"],
            ..parts(Outcome::Kicked)
        },
        // No ambiguity between a user list and a job key that runs on.
        IdParts {
            users: vec!["ab"],
            ..parts(Outcome::Kicked)
        },
    ];
    let mut seen = vec![base];
    for p in changed {
        let id = event_id(&p);
        assert!(!seen.contains(&id), "{p:?} must change the id");
        seen.push(id);
    }
}

fn at() -> DateTime<Utc> {
    "2026-12-01T12:00:00.250Z".parse().unwrap()
}

fn finished(users: Vec<(&str, Verdict, Option<&str>)>) -> Finished {
    Finished {
        namespace: "kickq".into(),
        job_id: Some("report-8841".into()),
        app_id: Some(1234567890),
        room_id: Some("room-42".into()),
        reason: Some("spam".into()),
        lane: "live",
        attempts: 0,
        rate_limited: 0,
        halted_ms: 0,
        users: users
            .into_iter()
            .map(|(u, verdict, r)| UserVerdict {
                user_id: u.into(),
                verdict,
                request_id: r.map(str::to_owned),
            })
            .collect(),
        unusable: None,
        body_key: None,
    }
}

/// The README's example of each outcome, rendered by [`render`].
fn examples() -> Vec<(Outcome, Finished)> {
    let kicked = finished(vec![
        ("u1", Verdict::Kicked, Some("8f1c0f3e6a7b4b21")),
        ("u2", Verdict::NothingToDo, Some("8f1c0f3e6a7b4b21")),
        ("u3", Verdict::AlreadyDone, None),
    ]);
    let retrying = finished(vec![
        ("u1", Verdict::Kicked, Some("2b7e41d09a3c5f18")),
        ("u2", Verdict::Retrying, Some("5d0c92e1b4a8f637")),
    ]);
    let partial = Finished {
        attempts: 1,
        ..finished(vec![
            ("u1", Verdict::Kicked, Some("c3a9e5f1027d4b86")),
            (
                "u2",
                Verdict::DeadLettered {
                    error: DeadError::Permanent,
                    code: Some(2),
                    detail: "code 2 (input parameter error): UserId invalid".into(),
                },
                Some("9e4f7a2c1b3d5e60"),
            ),
        ])
    };
    let failed = Finished {
        job_id: None,
        app_id: None,
        room_id: None,
        reason: None,
        lane: "bulk",
        users: Vec::new(),
        unusable: Some((
            DeadError::Validation,
            "not JSON: expected value at line 1 column 1".into(),
        )),
        body_key: Some(body_key(b"room=42&user=u1")),
        ..finished(vec![])
    };
    let expired = Finished {
        users: vec![UserVerdict {
            user_id: "u1".into(),
            verdict: Verdict::DeadLettered {
                error: DeadError::Expired,
                code: None,
                detail: "not_after 2026-12-01T11:59:00.000Z had passed when the job was taken in; no call was made"
                    .into(),
            },
            request_id: None,
        }],
        unusable: Some((
            DeadError::Expired,
            "not_after 2026-12-01T11:59:00.000Z had passed when the job was taken in; no call was made".into(),
        )),
        ..finished(vec![])
    };
    vec![
        (Outcome::Kicked, kicked),
        (Outcome::Retrying, retrying),
        (Outcome::Partial, partial),
        (Outcome::Failed, failed),
        (Outcome::Expired, expired),
    ]
}

fn pretty(e: &Event) -> String {
    let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
    serde_json::to_string_pretty(&v).unwrap()
}

#[test]
fn bodies_are_structured_cloudevents_with_every_documented_field() {
    for (want, f) in examples() {
        let e = render(&f, at());
        assert_eq!(e.outcome, want);
        let app = f.app_id.map_or("unknown".to_owned(), |a| a.to_string());
        assert_eq!(e.routing_key, format!("{want}.{app}"));
        assert_eq!(e.event_type, format!("com.kickq.job.{want}"));
        let v: serde_json::Value = serde_json::from_slice(&e.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], e.id.as_str());
        assert_eq!(v["source"], "kickq/kickq");
        assert_eq!(v["type"], e.event_type.as_str());
        assert_eq!(v["time"], "2026-12-01T12:00:00.250Z");
        assert_eq!(v["datacontenttype"], "application/json");
        assert_eq!(v.get("subject").and_then(|s| s.as_str()), f.job_id.as_deref());
        let d = &v["data"];
        assert_eq!(d["outcome"], want.as_str());
        for key in [
            "job_id",
            "app_id",
            "room_id",
            "reason",
            "lane",
            "attempts",
            "users",
            "request_ids",
        ] {
            assert!(d.get(key).is_some(), "{want}: data.{key}");
        }
        for key in ["kicked", "nothing_to_do", "already_done", "retrying", "dead_lettered"] {
            assert!(d["users"][key].is_array(), "{want}: data.users.{key}");
        }
        assert_eq!(d.get("error").is_some(), f.unusable.is_some(), "{want}: data.error");
        // The id is a function of the delivery, not of the time.
        let later = render(&f, at() + chrono::Duration::seconds(5));
        assert_eq!(later.id, e.id);
    }
}

#[test]
fn users_are_listed_by_verdict_with_their_request_ids() {
    let (_, f) = examples().swap_remove(2);
    let v: serde_json::Value = serde_json::from_slice(&render(&f, at()).body).unwrap();
    let d = &v["data"];
    assert_eq!(d["users"]["kicked"], serde_json::json!(["u1"]));
    assert_eq!(d["users"]["dead_lettered"][0]["user_id"], "u2");
    assert_eq!(d["users"]["dead_lettered"][0]["error"], "permanent");
    assert_eq!(d["users"]["dead_lettered"][0]["code"], 2);
    assert_eq!(d["users"]["dead_lettered"][0]["request_id"], "9e4f7a2c1b3d5e60");
    assert_eq!(
        d["request_ids"],
        serde_json::json!(["c3a9e5f1027d4b86", "9e4f7a2c1b3d5e60"])
    );
    assert_eq!(d["attempts"], 1);
}

/// The README shows exactly what this code renders; `KICKQ_PRINT_EVENT_EXAMPLES=1
/// cargo test --lib event::tests -- --nocapture` prints them to paste.
#[test]
fn readme_examples_are_rendered_by_this_code() {
    let readme = include_str!("../../../README.md");
    let mut missing = Vec::new();
    for (outcome, f) in examples() {
        let text = pretty(&render(&f, at()));
        if std::env::var_os("KICKQ_PRINT_EVENT_EXAMPLES").is_some() {
            println!("{outcome}:\n```json\n{text}\n```\n");
        }
        if !readme.contains(&text) {
            missing.push(format!("{outcome}:\n{text}"));
        }
    }
    assert!(
        missing.is_empty(),
        "README's Outcome events lacks these examples as rendered:\n{}",
        missing.join("\n")
    );
}
