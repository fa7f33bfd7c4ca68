//! The binary's command line: a missing or invalid setting exits non-zero with one line that names it, other
//! usage errors print whole, the help texts render, --version, completions and the man page print, and
//! mock-zego serves every AppId it is given.

use std::process::Command;

fn kickq(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let (code, out, err) = kickq_code(args, env);
    (code == Some(0), out, err)
}

fn kickq_code(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kickq"));
    cmd.args(args)
        .env_remove("ZEGO_APP_ID")
        .env_remove("ZEGO_SERVER_SECRET")
        .env_remove("ZEGO_SERVER_SECRET_FILE")
        .env_remove("DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kickq");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A well-formed ServerSecret (32 bytes), so the case under test is the one that fails.
const S32: &str = "0123456789abcdef0123456789abcdef";

#[test]
fn bad_settings_fail_with_one_line_naming_the_setting() {
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            vec![("ZEGO_APP_ID", "1"), ("ZEGO_SERVER_SECRET", "s")],
            "ZEGO_SERVER_SECRET is invalid: must be exactly 32 bytes",
        ),
        (vec![], "ZEGO_APP_ID is required"),
        (vec![("ZEGO_APP_ID", "abc")], "ZEGO_APP_ID is invalid"),
        (vec![("ZEGO_APP_ID", "1")], "ZEGO_SERVER_SECRET"),
        (
            vec![("ZEGO_APP_ID", "1"), ("ZEGO_SERVER_SECRET", S32), ("KICKQ_RATE", "abc")],
            "KICKQ_RATE",
        ),
        (
            vec![("ZEGO_APP_ID", "1"), ("ZEGO_SERVER_SECRET", S32), ("KICKQ_RATE", "0")],
            "KICKQ_RATE is invalid",
        ),
        (
            vec![("ZEGO_APP_ID", "1"), ("ZEGO_SERVER_SECRET", S32), ("KICKQ_RATE", "51")],
            "KICKQ_RATE is invalid: 51 is above ZEGOCLOUD's documented 50 calls/s for KickoutUser; if your app's limit was raised, add --allow-rate-above-documented",
        ),
        (
            vec![
                ("ZEGO_APP_ID", "1"),
                ("ZEGO_SERVER_SECRET", S32),
                ("KICKQ_NAMESPACE", "a b"),
            ],
            "KICKQ_NAMESPACE",
        ),
        (
            vec![
                ("ZEGO_APP_ID", "1"),
                ("ZEGO_SERVER_SECRET", S32),
                ("KICKQ_AMQP_URL", "http://x"),
            ],
            "KICKQ_AMQP_URL",
        ),
        (
            vec![
                ("ZEGO_APP_ID", "1"),
                ("ZEGO_SERVER_SECRET", S32),
                ("ZEGO_API_URL", "http://example.com"),
            ],
            "ZEGO_API_URL",
        ),
        (
            vec![
                ("ZEGO_APP_ID", "1"),
                ("ZEGO_SERVER_SECRET", S32),
                ("KICKQ_METRICS_ADDR", "nowhere"),
            ],
            "KICKQ_METRICS_ADDR",
        ),
        (
            vec![
                ("ZEGO_APP_ID", "1"),
                ("ZEGO_SERVER_SECRET", S32),
                ("KICKQ_ID_CHARSET", "ascii"),
            ],
            "KICKQ_ID_CHARSET",
        ),
    ];
    for (env, want) in cases {
        let (ok, _, err) = kickq(&["run"], &env);
        assert!(!ok, "{env:?} should fail");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{env:?}: one line, got {err}");
        assert!(lines[0].contains(want), "{env:?}: {err} should name {want}");
    }
}

#[test]
fn bad_mock_apps_fail_with_one_line_naming_the_problem() {
    /// Flags after `mock-zego --listen 127.0.0.1:0`, environment, expected line.
    type Case = (Vec<&'static str>, Vec<(&'static str, &'static str)>, &'static str);
    let cases: Vec<Case> = vec![
        (
            vec!["--app", "1:NOPE"],
            vec![],
            "--app 1:NOPE: the environment variable NOPE is not set",
        ),
        (
            vec!["--app", "1:SHORT"],
            vec![("SHORT", "s")],
            "SHORT is invalid: must be exactly 32 bytes",
        ),
        (vec!["--app", "1"], vec![], "has no ':'"),
        (
            vec!["--app", "0:A"],
            vec![("A", S32)],
            "the AppId must be a non-zero uint32",
        ),
        (
            vec!["--app", "1:A", "--app", "1:A"],
            vec![("A", S32)],
            "AppId 1 is given twice (in --app twice)",
        ),
        (
            vec!["--app", "1:A"],
            vec![("A", S32), ("ZEGO_APP_ID", "1"), ("ZEGO_SERVER_SECRET", S32)],
            "AppId 1 is given twice (in --app and ZEGO_APP_ID)",
        ),
        (vec![], vec![], "ZEGO_APP_ID is required, or at least one --app"),
    ];
    for (flags, env, want) in cases {
        let args = [&["mock-zego", "--listen", "127.0.0.1:0"][..], &flags].concat();
        let (code, _, err) = kickq_code(&args, &env);
        assert_eq!(code, Some(1), "{args:?}: {err}");
        let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{args:?}: one line, got {err}");
        assert!(lines[0].contains(want), "{args:?}: {err} should say {want}");
        assert!(!err.contains(S32), "{args:?}: the secret is echoed: {err}");
    }
}

/// One signed KickoutUser call over a raw HTTP/1.1 connection; the whole response.
fn raw_kick(addr: std::net::SocketAddr, app_id: u32, secret: &str) -> String {
    use std::io::{Read, Write};
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let nonce = "0011223344556677";
    let sig = kickq::zego::signature(app_id, nonce, &kickq::secret::Secret::new(secret), ts);
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("Action", "KickoutUser")
        .append_pair("AppId", &app_id.to_string())
        .append_pair("SignatureNonce", nonce)
        .append_pair("Timestamp", &ts.to_string())
        .append_pair("Signature", &sig)
        .append_pair("SignatureVersion", "2.0")
        .append_pair("RoomId", "r")
        .append_pair("UserId[]", "u")
        .finish();
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "GET /?{query} HTTP/1.1\r\nHost: mock\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn mock_zego_serves_every_app_given_with_its_own_secret() {
    const T32: &str = "fedcba9876543210fedcba9876543210";
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["mock-zego", "--listen", &addr.to_string(), "--app", "1:APP_ONE_SECRET"])
        .args(["--app", "2:APP_TWO_SECRET"])
        .env_remove("ZEGO_SERVER_SECRET_FILE")
        .env("ZEGO_APP_ID", "3")
        .env("ZEGO_SERVER_SECRET", S32)
        .env("APP_ONE_SECRET", S32)
        .env("APP_TWO_SECRET", T32)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kickq mock-zego");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "mock-zego never listened on {addr}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let answers: Vec<(u32, &str, bool)> = [(1, S32), (2, T32), (3, S32), (2, S32), (4, S32)]
        .into_iter()
        .map(|(app, secret)| (app, secret, raw_kick(addr, app, secret).contains(r#""Code":0,"#)))
        .collect();
    let _ = child.kill();
    let _ = child.wait();
    let ok: Vec<u32> = answers.iter().filter(|a| a.2).map(|a| a.0).collect();
    assert_eq!(ok, [1, 2, 3], "each AppId with its own secret, and only those");
}

#[test]
fn the_secret_is_never_echoed_in_an_error() {
    let (ok, out, err) = kickq(
        &["run"],
        &[
            ("ZEGO_APP_ID", "1"),
            ("ZEGO_SERVER_SECRET", "hunter2-secret-hunter2-secret-32"),
            ("ZEGO_API_URL", "ftp://x"),
        ],
    );
    assert!(!ok);
    assert!(!out.contains("hunter2") && !err.contains("hunter2"), "{err}");
}

#[test]
fn help_reads_for_every_command() {
    for args in [
        vec!["--help"],
        vec!["run", "--help"],
        vec!["mock-zego", "--help"],
        vec!["demo", "--help"],
        vec!["check", "--help"],
        vec!["status", "--help"],
    ] {
        let (ok, out, _) = kickq(&args, &[]);
        assert!(ok, "{args:?}");
        assert!(out.contains("Usage: kickq"), "{args:?}: {out}");
    }
    let (_, out, _) = kickq(&["mock-zego", "--help"], &[]);
    assert!(out.contains("--fault") && out.contains("--rate-limit"), "{out}");
}

#[test]
fn usage_errors_print_whole_as_clap_renders_them() {
    let (code, out, err) = kickq_code(&["enqueue"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty(), "{out}");
    let lines: Vec<&str> = err.lines().collect();
    let at = lines
        .iter()
        .position(|l| l.contains("the following required arguments were not provided:"))
        .unwrap_or_else(|| panic!("no missing-arguments line in {err}"));
    assert!(
        lines.get(at + 1).is_some_and(|l| l.trim_start().starts_with("--")),
        "the missing arguments are listed: {err}"
    );
    assert!(err.contains("Usage: kickq enqueue"), "the usage line: {err}");

    let (code, _, err) = kickq_code(&["enqeue"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unrecognized subcommand 'enqeue'"), "{err}");
    assert!(
        err.contains("tip: a similar subcommand exists: 'enqueue'"),
        "the did-you-mean tip: {err}"
    );
    assert!(err.contains("Usage: kickq"), "{err}");

    let (code, _, err) = kickq_code(&["run", "--no-such-flag"], &[]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("unexpected argument '--no-such-flag'") && err.contains("Usage: kickq run"),
        "{err}"
    );
}

#[test]
fn version_names_the_commit() {
    let (ok, out, _) = kickq(&["--version"], &[]);
    assert!(ok);
    let line = out.trim_end();
    let rest = line
        .strip_prefix(&format!("kickq {} (", env!("CARGO_PKG_VERSION")))
        .and_then(|r| r.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?} is not `kickq VERSION (SHA)`"));
    assert!(
        rest == "unknown" || (rest.len() == 7 && rest.chars().all(|c| c.is_ascii_hexdigit())),
        "{line:?}"
    );
    assert_eq!(rest, kickq::GIT_SHA, "the library and the binary agree");
}

#[test]
fn completions_and_man_page_print() {
    for (shell, needle) in [
        ("bash", "complete -F _kickq"),
        ("zsh", "#compdef kickq"),
        ("fish", "complete -c kickq"),
    ] {
        let (ok, out, err) = kickq(&["completions", shell], &[]);
        assert!(ok, "{shell}: {err}");
        assert!(out.contains(needle), "{shell}: {needle} missing in {out}");
        assert!(out.contains("enqueue") && out.contains("check"), "{shell}: subcommands");
    }
    let (code, _, err) = kickq_code(&["completions", "tcsh"], &[]);
    assert_eq!(code, Some(2), "{err}");
    let (ok, out, err) = kickq(&["man"], &[]);
    assert!(ok, "{err}");
    assert!(out.lines().any(|l| l.starts_with(".TH kickq")), "{out}");
    assert!(out.contains(".SH NAME") && out.contains("enqueue"), "{out}");
}
