//! The web console over real HTTP, against a real worker, broker, ledger and mock-zego: who gets in (no
//! session: 401 or the login form; a wrong token: 401; a POST without the CSRF token: 403), the cookie's
//! attributes, bearer tokens for scripts, no secret on any page, and the dead letters' replay and purge
//! through the CLI's passes. The browser test (`console_browser.rs`) drives the same pages in Chromium.

use crate::common;

use common::*;
use kickq::secret::Secret;
use kickq::worker::ConsoleConfig;
use reqwest::header::{ACCEPT, AUTHORIZATION, COOKIE, LOCATION, SET_COOKIE};
use reqwest::redirect::Policy;
use reqwest::StatusCode;
use std::time::Duration;

const TOKEN: &str = "console-test-token-0123456789";

/// A urlencoded form body (reqwest's `form` is a feature this crate does not build).
trait FormExt {
    fn form_of<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self;
}

impl FormExt for reqwest::RequestBuilder {
    fn form_of<K: AsRef<str>, V: AsRef<str>>(self, pairs: &[(K, V)]) -> Self {
        let mut s = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in pairs {
            s.append_pair(k.as_ref(), v.as_ref());
        }
        self.header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(s.finish())
    }
}

struct Setup {
    ns: Ns,
    mock: kickq::mock_zego::MockZego,
    worker: Running,
    base: String,
    http: reqwest::Client,
    dir: std::path::PathBuf,
    db: TestDb,
}

async fn setup(tag: &str) -> Setup {
    let ns = Ns::new(tag);
    let mock = mock(50).await;
    let db = TestDb::migrated().await;
    let (dir, token_file) = token_file(&ns, &format!("# test\n{TOKEN}\nsecond-token-0123456789abcdef\n"));
    let cfg = kickq::worker::WorkerConfig {
        database_url: Some(Secret::new(db.url.clone())),
        ..worker_config(&ns, &mock.base_url(), 50).with_console(ConsoleConfig {
            addr: "127.0.0.1:0".parse().unwrap(),
            token_file,
            management_url: None,
        })
    };
    let worker = spawn_worker(cfg).await;
    let base = format!("http://{}", worker.console_addr.expect("the console listens"));
    kickq::zego::client::install_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Setup {
        ns,
        mock,
        worker,
        base,
        http,
        dir,
        db,
    }
}

impl Setup {
    async fn teardown(self) {
        self.worker.stop().await;
        self.mock.shutdown().await;
        self.db.drop_db().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        drop(self.ns);
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Logs in through the form: the session cookie's `name=value`.
    async fn login(&self) -> (String, reqwest::Response) {
        let form = self.http.get(self.url("/login")).send().await.unwrap();
        let login_cookie = cookie_pair(&form, "kickq_console_login").expect("the form sets its CSRF cookie");
        let html = form.text().await.unwrap();
        let csrf = hidden(&html, "csrf");
        let resp = self
            .http
            .post(self.url("/login"))
            .header(COOKIE, &login_cookie)
            .form_of(&[("csrf", csrf.as_str()), ("token", TOKEN)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        (cookie_pair(&resp, "kickq_console").expect("a session cookie"), resp)
    }

    async fn get_with(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(self.url(path))
            .header(COOKIE, cookie)
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    }
}

/// `name=value` of a `Set-Cookie` the answer sets.
fn cookie_pair(resp: &reqwest::Response, name: &str) -> Option<String> {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap().to_owned())
}

fn set_cookie_line(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_default()
        .to_owned()
}

/// The value of the first hidden input named `name` in a page.
fn hidden(html: &str, name: &str) -> String {
    let at = html
        .find(&format!(r#"name="{name}" value=""#))
        .unwrap_or_else(|| panic!("no hidden {name} in {html}"));
    let rest = &html[at + name.len() + 15..];
    rest[..rest.find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn only_a_token_or_a_session_gets_in() {
    let s = setup("console-auth").await;
    // No session: a browser is sent to the login form, a script gets 401.
    let r = s.http.get(s.url("/")).header(ACCEPT, "text/html").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/login");
    for path in ["/", "/live", "/dead", "/history", "/workers"] {
        let r = s.http.get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
    }
    for path in ["/dead/confirm", "/dead/act", "/logout"] {
        let r = s
            .http
            .post(s.url(path))
            .header(ACCEPT, "text/html")
            .form_of(&[("action", "purge-all")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "POST {path}");
    }
    // htmx's refresh of an ended session is sent to the login.
    let r = s
        .http
        .get(s.url("/live"))
        .header("hx-request", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers()["hx-redirect"], "/login");
    // Assets and the login form need nothing.
    assert_eq!(
        s.http.get(s.url("/assets/style.css")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let js = s.http.get(s.url("/assets/htmx.min.js")).send().await.unwrap();
    assert_eq!(js.headers()["content-type"], "text/javascript");

    // The login form's own CSRF token: a POST without it (or without its cookie) is 403.
    let form = s.http.get(s.url("/login")).send().await.unwrap();
    let login_cookie = cookie_pair(&form, "kickq_console_login").unwrap();
    let csrf = hidden(&form.text().await.unwrap(), "csrf");
    let no_cookie = s
        .http
        .post(s.url("/login"))
        .form_of(&[("csrf", csrf.as_str()), ("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(no_cookie.status(), StatusCode::FORBIDDEN);
    // Wrong tokens: 401 and no session, whatever they share with a right one.
    for wrong in [
        "",
        "x",
        "console-test-token",
        "console-test-token-01234567890",
        "CONSOLE-TEST-TOKEN-0123456789",
    ] {
        let r = s
            .http
            .post(s.url("/login"))
            .header(COOKIE, &login_cookie)
            .form_of(&[("csrf", csrf.as_str()), ("token", wrong)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{wrong:?}");
        assert_eq!(cookie_pair(&r, "kickq_console"), None, "{wrong:?}");
        assert!(r.text().await.unwrap().contains("not in the token file"));
    }

    // The right token: a session cookie, HttpOnly and SameSite=Strict; not
    // Secure on loopback.
    let (session, resp) = s.login().await;
    let line = set_cookie_line(&resp, "kickq_console");
    assert!(
        line.contains("HttpOnly") && line.contains("SameSite=Strict") && line.contains("Path=/"),
        "{line}"
    );
    assert!(!line.contains("Secure"), "loopback: {line}");
    let (status, html) = s.get_with("/", &session).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("AppId 1234567890") && html.contains("calls/s of 50"),
        "{html}"
    );
    let csrf = hidden(&html, "csrf");

    // State-changing forms need the session's CSRF token.
    for form in [
        vec![("action", "purge-all")],
        vec![("action", "purge-all"), ("csrf", "wrong")],
    ] {
        for path in ["/dead/confirm", "/dead/act", "/logout"] {
            let r = s
                .http
                .post(s.url(path))
                .header(COOKIE, &session)
                .form_of(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "POST {path} {form:?}");
        }
    }
    // A script's bearer token needs no CSRF token (it sends no cookie).
    let r = s
        .http
        .get(s.url("/workers"))
        .header(AUTHORIZATION, "Bearer second-token-0123456789abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = s
        .http
        .get(s.url("/"))
        .header(AUTHORIZATION, "Bearer console-test-token-012345678")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "a wrong bearer token");

    // Every page carries the headers that keep it to itself.
    let r = s.http.get(s.url("/")).header(COOKIE, &session).send().await.unwrap();
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{csp}"
    );
    assert_eq!(r.headers()["cache-control"], "no-store");

    // Logout ends the session.
    let r = s
        .http
        .post(s.url("/logout"))
        .header(COOKIE, &session)
        .form_of(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(set_cookie_line(&r, "kickq_console").contains("Max-Age=0"));
    let (status, _) = s.get_with("/dead", &session).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the old cookie is dead");
    s.teardown().await;
}

#[tokio::test]
async fn dead_letters_are_filtered_replayed_and_purged_with_the_cli_passes() {
    let s = setup("console-dead").await;
    let broker = Broker::connect().await;
    broker.declare(&s.ns.names).await;
    s.mock
        .set_faults(vec![kickq::mock_zego::parse_fault("room=banned-*,code=2").unwrap()]);
    for (room, user) in [("banned-1", "a"), ("banned-1", "b"), ("banned-2", "c")] {
        broker
            .publish_raw(&s.ns.names.requests, &job(room, &[user], Some("spam")))
            .await;
    }
    broker.publish_raw(&s.ns.names.requests, b"not json at all").await;
    let dead = s.ns.names.dead.clone();
    wait_for(Duration::from_secs(30), "4 dead letters", || async {
        broker.depth(&dead).await == 4
    })
    .await;
    let bearer = format!("Bearer {TOKEN}");
    let get = |path: String| {
        let req = s.http.get(s.url(&path)).header(AUTHORIZATION, &bearer);
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let (status, html) = get("/dead?room=banned-1".into()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("<strong>2</strong> of 4 letter(s)"), "{html}");
    assert!(html.contains("banned-1") && !html.contains(">banned-2<"), "{html}");
    assert!(
        html.contains("kickq-error") && html.contains("permanent"),
        "the headers are shown: {html}"
    );
    let (_, html) = get("/dead?error=validation".into()).await;
    assert!(
        html.contains("<strong>1</strong> of 4") && html.contains("not json at all"),
        "{html}"
    );
    let (_, html) = get(format!("/dead?app={APP_ID}&code=2")).await;
    assert!(html.contains("<strong>3</strong> of 4"), "{html}");
    let (status, html) = get("/dead?since=yesterday".into()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(html.contains("since:"), "{html}");

    // Select one letter of banned-1 and replay it: the confirmation counts 1.
    let (_, html) = get("/dead?room=banned-1".into()).await;
    let key = hidden(&html, "key");
    let post = |path: &'static str, form: Vec<(&'static str, String)>| {
        let req = s.http.post(s.url(path)).header(AUTHORIZATION, &bearer).form_of(&form);
        async move {
            let r = req.send().await.unwrap();
            (r.status(), r.text().await.unwrap())
        }
    };
    let asked = vec![
        ("action", "replay-selected".to_owned()),
        ("room", "banned-1".to_owned()),
        ("lane", "live".to_owned()),
        ("key", key.clone()),
    ];
    let (status, html) = post("/dead/confirm", asked.clone()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("Replay 1 of 4 letter(s) in") && html.contains(&s.ns.names.requests),
        "{html}"
    );
    s.mock.set_faults(Vec::new());
    let mut act = asked.clone();
    act.push(("count", "1".into()));
    let (status, html) = post("/dead/act", act).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains(r#"data-moved="1""#) && html.contains("replayed 1, kept 3 in order"),
        "{html}"
    );
    let ledger = kickq::testkit::ledger::Ledger::connect(&s.db.url).await.unwrap();
    wait_for(Duration::from_secs(30), "the replayed letter kicked", || async {
        broker.depth(&dead).await == 3 && s.mock.kicked().iter().any(|k| k.room_id == "banned-1")
    })
    .await;
    // History shows it, with its RequestId, searched by user alone.
    let kicked_user = s
        .mock
        .kicked()
        .into_iter()
        .find(|k| k.room_id == "banned-1")
        .unwrap()
        .user_id;
    wait_for(Duration::from_secs(10), "the ledger row", || async {
        let q = kickq::testkit::ledger::HistoryQuery {
            room_id: None,
            user_id: Some(kicked_user.clone()),
            job_id: None,
            since: None,
            limit: 10,
        };
        ledger
            .history(&q)
            .await
            .unwrap()
            .iter()
            .any(|r| r.outcome.as_str() == "kicked")
    })
    .await;
    let (_, html) = get(format!("/history?user={kicked_user}")).await;
    assert!(html.contains("kicked") && html.contains("banned-1"), "{html}");
    assert!(
        html.contains("<code>") && !html.contains("<code>-</code></td><td>"),
        "a RequestId is shown: {html}"
    );

    // Purge every validation letter; the CLI sees what is left.
    let purge = vec![("action", "purge-all".to_owned()), ("error", "validation".to_owned())];
    let (_, html) = post("/dead/confirm", purge.clone()).await;
    assert!(html.contains("Purge 1 of 3 letter(s)"), "{html}");
    let mut purge = purge;
    purge.push(("count", "1".into()));
    let (_, html) = post("/dead/act", purge).await;
    assert!(html.contains("purged 1, kept 2"), "{html}");
    let out = kickq(&s.ns, &["dlq", "list", "--json"], &[], None).await;
    let letters: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rooms: Vec<&str> = letters
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(rooms.len(), 2, "{letters}");
    assert!(rooms.contains(&"banned-2"));
    assert!(letters[0]["key"].as_str().is_some_and(|k| k.len() == 16), "{letters}");
    // The CLI's --app: a job that names no app is ZEGO_APP_ID's, as in the console.
    let app = APP_ID.to_string();
    let out = kickq(
        &s.ns,
        &["dlq", "list", "--json", "--app", &app],
        &[("ZEGO_APP_ID", &app)],
        None,
    )
    .await;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().map(Vec::len), Some(2), "{}", text(&out).1);
    let out = kickq(&s.ns, &["dlq", "list", "--app", "7"], &[("ZEGO_APP_ID", &app)], None).await;
    assert!(text(&out).1.contains("0 of 2 letter(s)"), "{}", text(&out).1);

    // Nothing secret on any page: not the ServerSecret, not the AMQP URL.
    for path in ["/", "/dead", "/history?room=banned-1", "/workers"] {
        let (_, html) = get(path.into()).await;
        assert!(!html.contains(SECRET), "{path} shows the secret");
        assert!(!html.contains("amqp://"), "{path} shows the broker URL");
        assert!(!html.contains(&s.db.url), "{path} shows the database URL");
    }
    s.teardown().await;
}

/// `kickq run` refuses a console without a token file, and names the setting.
#[tokio::test]
async fn the_console_never_runs_open() {
    let ns = Ns::new("console-open");
    let (dir, empty) = token_file(&ns, "# no token yet\n\n");
    for (env, says) in [
        (vec![("KICKQ_CONSOLE_ADDR", "127.0.0.1:0")], "KICKQ_CONSOLE_TOKEN_FILE"),
        (
            vec![
                ("KICKQ_CONSOLE_ADDR", "127.0.0.1:0"),
                ("KICKQ_CONSOLE_TOKEN_FILE", "/nonexistent/kickq-tokens"),
            ],
            "/nonexistent/kickq-tokens",
        ),
        (vec![("KICKQ_CONSOLE_ADDR", "not an address")], "KICKQ_CONSOLE_ADDR"),
        (
            vec![
                ("KICKQ_CONSOLE_ADDR", "127.0.0.1:0"),
                ("KICKQ_CONSOLE_TOKEN_FILE", empty.to_str().unwrap()),
            ],
            "holds no usable token",
        ),
    ] {
        let mut env = env;
        env.extend([
            ("ZEGO_APP_ID", "1234567890"),
            ("ZEGO_SERVER_SECRET", SECRET),
            ("KICKQ_METRICS_ADDR", "0"),
        ]);
        let out = kickq(&ns, &["run"], &env, None).await;
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {stderr}");
        assert!(stderr.contains(says), "{env:?}: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The console never takes the HTTP intake's tokens: without a file of its
/// own it does not start, and beside one an intake token does not log in.
/// Off loopback its session cookie is `Secure`.
#[tokio::test]
async fn off_loopback_the_cookie_is_secure_and_intake_tokens_never_open_the_console() {
    let ns = Ns::new("console-secure");
    let mock = mock(50).await;
    let (dir, tokens) = token_file(&ns, &format!("{TOKEN}\n"));
    let intake = dir.join("intake-tokens");
    std::fs::write(&intake, "an-intake-token-of-a-producer-0123456789abcdef\n").unwrap();
    let out = kickq(
        &ns,
        &["run"],
        &[
            ("KICKQ_CONSOLE_ADDR", "127.0.0.1:0"),
            ("KICKQ_HTTP_INTAKE_ADDR", "127.0.0.1:0"),
            ("KICKQ_HTTP_INTAKE_TOKEN_FILE", intake.to_str().unwrap()),
            ("ZEGO_APP_ID", "1234567890"),
            ("ZEGO_SERVER_SECRET", SECRET),
            ("KICKQ_METRICS_ADDR", "0"),
        ],
        None,
    )
    .await;
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("KICKQ_CONSOLE_TOKEN_FILE"), "{stderr}");
    let port = free_port();
    let _worker = ChildGuard(spawn_binary_worker(
        &ns,
        &mock.base_url(),
        50,
        &[
            ("KICKQ_CONSOLE_ADDR", &format!("0.0.0.0:{port}")),
            ("KICKQ_CONSOLE_TOKEN_FILE", tokens.to_str().unwrap()),
            ("KICKQ_HTTP_INTAKE_ADDR", "127.0.0.1:0"),
            ("KICKQ_HTTP_INTAKE_TOKEN_FILE", intake.to_str().unwrap()),
        ],
    ));
    kickq::zego::client::install_crypto_provider();
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .no_proxy()
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut form = None;
    for _ in 0..200 {
        if let Ok(r) = http.get(format!("{base}/login")).send().await {
            form = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let form = form.expect("the console listens");
    let login_cookie = cookie_pair(&form, "kickq_console_login").unwrap();
    assert!(set_cookie_line(&form, "kickq_console_login").contains("; Secure"));
    let csrf = hidden(&form.text().await.unwrap(), "csrf");
    let refused = http
        .post(format!("{base}/login"))
        .header(COOKIE, &login_cookie)
        .form_of(&[
            ("csrf", csrf.as_str()),
            ("token", "an-intake-token-of-a-producer-0123456789abcdef"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "an intake token opens nothing"
    );
    let r = http
        .post(format!("{base}/login"))
        .header(COOKIE, &login_cookie)
        .form_of(&[("csrf", csrf.as_str()), ("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "the console's token logs in");
    let line = set_cookie_line(&r, "kickq_console");
    assert!(line.contains("; Secure") && line.contains("HttpOnly"), "{line}");
    mock.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// Failed logins (and wrong bearer tokens) are throttled per client
/// address: after ten in a minute, even the right token is refused with 429
/// and Retry-After, by the login form and as a bearer token.
#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let s = setup("console-throttle").await;
    let form = s.http.get(s.url("/login")).send().await.unwrap();
    let login_cookie = cookie_pair(&form, "kickq_console_login").unwrap();
    let csrf = hidden(&form.text().await.unwrap(), "csrf");
    let try_login = |token: String| {
        let (s, login_cookie, csrf) = (&s, login_cookie.clone(), csrf.clone());
        async move {
            s.http
                .post(s.url("/login"))
                .header(COOKIE, &login_cookie)
                .form_of(&[("csrf", csrf.as_str()), ("token", token.as_str())])
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..10 {
        let r = try_login(format!("{TOKEN}-guess-{i}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let r = try_login(TOKEN.to_owned()).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(cookie_pair(&r, "kickq_console"), None, "no session");
    let r = s
        .http
        .get(s.url("/workers"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "a bearer token too");
    s.teardown().await;
}

/// Ids are shown safely: a bidirectional override in a dead letter's room
/// or user id reaches the page as the escape `\u{202e}`, never as the
/// character that would reorder what the operator reads.
#[tokio::test]
async fn bidi_characters_in_ids_are_shown_escaped() {
    let s = setup("console-bidi").await;
    let broker = Broker::connect().await;
    broker.declare(&s.ns.names).await;
    let body = "{\"room_id\":\"room\u{202e}1\",\"user_ids\":[\"user\u{2066}2\"]}";
    broker.publish_many(&s.ns.names.dead, &[body.as_bytes().to_vec()]).await;
    let r = s
        .http
        .get(s.url("/dead"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("room\\u{202e}1"), "the room, escaped: {html}");
    assert!(html.contains("user\\u{2066}2"), "the user, escaped");
    assert!(
        !html.contains('\u{202e}') && !html.contains('\u{2066}'),
        "no bidirectional character reaches the page"
    );
    s.teardown().await;
}
