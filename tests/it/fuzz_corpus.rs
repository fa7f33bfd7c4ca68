//! Runs every file of the fuzz seed corpus (`fuzz/corpus/parse_job/`) and of the fuzz findings
//! (`fuzz/regressions/parse_job/`) through `kickq::job::parse`, checking the fuzz target's invariants, so
//! the corpus and every finding stay tests on a stable toolchain.

#[path = "../support/job_invariants.rs"]
mod job_invariants;

use std::path::{Path, PathBuf};

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries {
        let path = entry.expect("readable directory entry").path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push(path);
        }
    }
    files.sort();
    files
}

fn run_all(dir: &Path) -> (usize, usize) {
    let (mut accepted, mut refused) = (0, 0);
    for path in files_under(dir) {
        let body = std::fs::read(&path).expect("readable corpus file");
        let outcome = std::panic::catch_unwind(|| job_invariants::parse_and_check(&body));
        match outcome {
            Ok(Ok(_)) => accepted += 1,
            Ok(Err(_)) => refused += 1,
            Err(_) => panic!("{} breaks an invariant (see the panic above)", path.display()),
        }
    }
    (accepted, refused)
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

#[test]
fn seed_corpus_holds_the_invariants() {
    let (accepted, refused) = run_all(&fuzz_dir().join("corpus/parse_job"));
    // The seeds are meant to cover both sides; an emptied or one-sided corpus is a mistake.
    assert!(accepted >= 5, "only {accepted} seeds parse");
    assert!(refused >= 5, "only {refused} seeds are refused");
}

#[test]
fn fuzz_regressions_hold_the_invariants() {
    // Empty until the fuzzer finds something; see fuzz/README.md.
    run_all(&fuzz_dir().join("regressions/parse_job"));
}

#[test]
fn a_known_seed_parses_as_expected() {
    let body = std::fs::read(fuzz_dir().join("corpus/parse_job/duplicate_users.json")).unwrap();
    let job = job_invariants::parse_and_check(&body).unwrap();
    assert_eq!(job.user_ids, ["a", "b"]);
    assert_eq!(job.reason, None);
}

fn tampered(edit: impl FnOnce(&mut kickq::job::KickRequest)) {
    let body = br#"{"room_id":"r","user_ids":["a","b"],"reason":"spam"}"#;
    let mut job = kickq::job::parse(body, &kickq::job::Limits::default()).unwrap();
    edit(&mut job);
    job_invariants::check_accepted(body, &job, &kickq::job::Limits::default());
}

// The checker is not vacuous: a job that breaks a rule, or differs from its body, fails it.

#[test]
#[should_panic(expected = "is a duplicate")]
fn checker_catches_duplicate_users() {
    tampered(|j| j.user_ids.push("a".into()));
}

#[test]
#[should_panic(expected = "holds a control character")]
fn checker_catches_control_characters() {
    tampered(|j| j.room_id = "r\u{7}".into());
}

#[test]
#[should_panic(expected = "outside the vendor's id set")]
fn checker_catches_user_ids_outside_the_vendor_set() {
    tampered(|j| j.user_ids[1] = "b c".into());
}

#[test]
#[should_panic(expected = "outside the vendor's id set")]
fn checker_catches_room_ids_outside_the_vendor_set() {
    tampered(|j| j.room_id = "r😀".into());
}

#[test]
fn seeds_on_both_sides_of_the_vendor_set() {
    let seed = |name: &str| {
        let body = std::fs::read(fuzz_dir().join("corpus/parse_job").join(name)).unwrap();
        job_invariants::parse_and_check(&body)
    };
    let legal = seed("hostile_legal_ids.json").unwrap();
    assert_eq!(legal.user_ids.len(), 5);
    assert!(seed("valid_edges.json").is_ok());
    for name in [
        "hostile_ids.json",
        "ids_outside_vendor_set.json",
        "room_outside_vendor_set.json",
    ] {
        let err = seed(name).unwrap_err();
        assert!(
            matches!(err, kickq::job::InvalidJob::OutsideIdCharset { .. }),
            "{name}: {err}"
        );
    }
}

#[test]
#[should_panic(expected = "an empty reason must become None")]
fn checker_catches_empty_reason() {
    tampered(|j| j.reason = Some(String::new()));
}

#[test]
#[should_panic(expected = "user_ids are not the body's")]
fn checker_catches_reordered_users() {
    tampered(|j| j.user_ids.reverse());
}
