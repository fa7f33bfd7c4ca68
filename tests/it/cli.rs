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
    // Every page the pages name exists: `kickq man --dir` writes them all,
    // and `kickq man dlq list` prints one.
    let dir = std::env::temp_dir().join(format!("kickq-man-{}", std::process::id()));
    let (ok, _, err) = kickq(&["man", "--dir", dir.to_str().unwrap()], &[]);
    assert!(ok, "{err}");
    let mut named = std::collections::BTreeSet::new();
    for page in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(page.unwrap().path()).unwrap();
        for piece in text.split("kickq\\-").skip(1) {
            if let Some(name) = piece.split("(1)").next().filter(|n| !n.contains(char::is_whitespace)) {
                named.insert(format!("kickq-{}.1", name.replace("\\-", "-")));
            }
        }
    }
    assert!(named.contains("kickq-dlq-list.1") && named.len() > 10, "{named:?}");
    for page in &named {
        assert!(dir.join(page).exists(), "{page} is named but was not written");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let (ok, out, err) = kickq(&["man", "dlq", "list"], &[]);
    assert!(ok, "{err}");
    assert!(out.contains(".TH kickq-dlq-list 1"), "{out}");
    let (code, _, err) = kickq_code(&["man", "nope"], &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no command \"nope\""), "{err}");
}

/// A config file in a directory of its own, removed on drop.
struct TempConfig(std::path::PathBuf);

impl TempConfig {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("kickq-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("kickq.toml"), text).unwrap();
        Self(dir)
    }
    fn path(&self) -> String {
        self.0.join("kickq.toml").display().to_string()
    }
}

impl Drop for TempConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `--print-config` merges the file, the environment and the flags (flags
/// over env over file), validates, and prints no secret.
#[test]
fn print_config_merges_file_env_and_flags_and_redacts() {
    let cfg = TempConfig::new(
        "print",
        "namespace = \"fromfile\"\nprefetch = 1234\nmax_in_flight = 7\nconsole_addr = \"127.0.0.1:9465\"\nconsole_token_file = \"/etc/kickq/console-tokens\"\n\n[[apps]]\napp_id = 1234567890\nsecret_env = \"KQ_TEST_SECRET_MAIN\"\ndefault = true\n\n[[apps]]\napp_id = 987654321\nsecret_env = \"KQ_TEST_SECRET_GAMES\"\nrate = 20\napi_url = \"https://rtc-api-sha.zego.im\"\n",
    );
    let (ok, out, err) = kickq(
        &["run", "--config", &cfg.path(), "--print-config", "--max-in-flight", "9"],
        &[
            ("KQ_TEST_SECRET_MAIN", S32),
            ("KQ_TEST_SECRET_GAMES", "fedcba9876543210fedcba9876543210"),
            ("KICKQ_PREFETCH", "555"),
            ("KICKQ_AMQP_URL", "amqp://kickq:broker-pw-77@127.0.0.1:5672/%2f"),
            ("KICKQ_MANAGEMENT_URL", "http://admin:mgmt-pw-88@127.0.0.1:15672"),
        ],
    );
    assert!(ok, "{err}");
    let t: toml::Table = toml::from_str(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    assert_eq!(t["namespace"].as_str(), Some("fromfile"), "from the file");
    assert_eq!(t["prefetch"].as_integer(), Some(555), "env over file");
    assert_eq!(t["max_in_flight"].as_integer(), Some(9), "flag over file");
    let apps = t["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 2);
    assert_eq!(apps[0]["default"].as_bool(), Some(true));
    assert_eq!(apps[0]["rate"].as_integer(), Some(50));
    assert_eq!(apps[1]["rate"].as_integer(), Some(20));
    assert_eq!(apps[1]["api_url"].as_str(), Some("https://rtc-api-sha.zego.im"));
    assert_eq!(apps[1]["secret_env"].as_str(), Some("KQ_TEST_SECRET_GAMES"));
    assert_eq!(t["console_addr"].as_str(), Some("127.0.0.1:9465"));
    assert_eq!(t["console_token_file"].as_str(), Some("/etc/kickq/console-tokens"));
    assert!(
        t["management_url"]
            .as_str()
            .is_some_and(|u| u.contains("127.0.0.1:15672")),
        "{out}"
    );
    for hidden in [S32, "fedcba9876543210", "broker-pw-77", "mgmt-pw-88"] {
        assert!(!out.contains(hidden), "{hidden} printed:\n{out}");
    }
    // The same file through KICKQ_CONFIG.
    let (ok, out, err) = kickq(
        &["run", "--print-config"],
        &[
            ("KICKQ_CONFIG", &cfg.path()),
            ("KQ_TEST_SECRET_MAIN", S32),
            ("KQ_TEST_SECRET_GAMES", S32),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("namespace = \"fromfile\""), "{out}");
}

/// A config file that is unusable stops the command with one line naming
/// the file and the key, and never the secret.
#[test]
fn config_file_refusals_name_the_key() {
    /// The file, the environment, and a piece of the one error line.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (
            "[[apps]]\napp_id = 1\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
            &[],
            "`apps[0].secret` holds a secret",
        ),
        ("prefecth = 10\n", &[], "unknown setting `prefecth`"),
        (
            "prefetch = 70000\n",
            &[("ZEGO_APP_ID", "1"), ("ZEGO_SERVER_SECRET", S32)],
            "70000",
        ),
        (
            "[[apps]]\napp_id = 5\nsecret_env = \"KQ_TEST_UNSET_VAR\"\n",
            &[],
            "[[apps]] app_id 5: secret_env names KQ_TEST_UNSET_VAR",
        ),
        (
            "[[apps]]\napp_id = 5\nsecret_env = \"KQ_TEST_SECRET\"\n",
            &[("KQ_TEST_SECRET", S32), ("ZEGO_APP_ID", "5")],
            "keep one of them",
        ),
        (
            "[[apps]]\napp_id = 5\nsecret_env = \"KQ_TEST_SECRET\"\nrate = 60\n",
            &[("KQ_TEST_SECRET", S32)],
            "above ZEGOCLOUD's documented 50",
        ),
        (
            "[[apps]]\napp_id = 5\nsecret_env = \"KQ_TEST_SECRET\"\napi_url = \"http://rtc-api.example.com\"\n",
            &[("KQ_TEST_SECRET", S32)],
            "app 5:",
        ),
    ];
    for (i, (text, env, want)) in cases.iter().enumerate() {
        let cfg = TempConfig::new(&format!("refuse{i}"), text);
        let (code, _, err) = kickq_code(&["run", "--config", &cfg.path(), "--print-config"], env);
        assert_ne!(code, Some(0), "{text}: {err}");
        assert!(err.contains(want), "{text}: {err}");
        assert!(!err.contains("0123456789abcdef"), "secret printed: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
}

/// `--log-format pretty` into a pipe (not a terminal) writes no ANSI
/// escapes; the far mock's flags are in its start line.
#[test]
fn pretty_logs_into_a_pipe_carry_no_ansi_escapes() {
    use std::io::Read;
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kickq"))
        .args(["--log-format", "pretty", "mock-zego", "--listen", &addr.to_string()])
        .args(["--one-way-ms", "100", "--jitter-ms", "20"])
        .env_remove("ZEGO_SERVER_SECRET_FILE")
        .env("ZEGO_APP_ID", "3")
        .env("ZEGO_SERVER_SECRET", S32)
        .env("RUST_LOG", "info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
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
    let _ = child.kill();
    let _ = child.wait();
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("mock-zego listening"), "{err}");
    assert!(err.contains("one_way_ms=100") && err.contains("jitter_ms=20"), "{err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in a pipe: {err:?}");
    let (code, _, err) = kickq_code(
        &["mock-zego", "--one-way-ms", "10", "--jitter-ms", "11"],
        &[("ZEGO_APP_ID", "3"), ("ZEGO_SERVER_SECRET", S32)],
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("jitter 11 ms exceeds the one-way delay 10 ms"), "{err}");
}
