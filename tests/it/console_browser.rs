//! The console in a real browser: Debian's Chromium driven through chromedriver (fantoccini), against the
//! `kickq run` binary, the real broker, PostgreSQL and mock-zego. It logs in, watches a sweep's rate on the
//! overview, filters the dead letters, replays one into the live lane and finds it kicked in the history,
//! looks at the workers, and logs out; it saves a screenshot of each page under `docs/console/`.
//!
//! `#[ignore]`d because it needs `/usr/bin/chromium` and `/usr/bin/chromedriver`, which `.ci/run`
//! installs: run it with `cargo test --test it console_browser:: -- --ignored`.

use crate::common;

use common::*;
use fantoccini::{Client, ClientBuilder, Locator};
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

const TOKEN: &str = "browser-test-token-5f1c2a";
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// Jobs of the sweep: one user each, each in its own room, so no call
/// carries two: at 50 calls/s it lasts 40 s, longer than the test needs.
const SWEEP: usize = 2_000;

fn shot_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console")
}

/// chromedriver in a process group of its own, killed with the Chromium it
/// started when the test ends, passed or failed: a failing test never
/// reaches the session's close, and Chromium would outlive it.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "{name} is a PNG");
    std::fs::create_dir_all(shot_dir()).unwrap();
    std::fs::write(shot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Polls `f` every 250 ms until it is true, or fails naming `what`.
async fn until<F, Fut>(limit: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Waits until the browser shows `path` (a click's navigation may still be under way).
async fn at_path(c: &Client, path: &str) {
    let start = Instant::now();
    loop {
        let now = c.current_url().await.unwrap();
        if now.path() == path {
            return;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "at {now}, not {path}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The element once it is on the page.
async fn element(c: &Client, css: &str) -> fantoccini::elements::Element {
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css}: {e}"))
}

/// Clicks the element.
async fn click(c: &Client, css: &str) {
    element(c, css).await.click().await.unwrap();
}

/// Types `text` into the element.
async fn type_into(c: &Client, css: &str, text: &str) {
    element(c, css).await.send_keys(text).await.unwrap();
}

/// Follows the navigation link to `path` and waits for its page.
async fn go(c: &Client, path: &str) {
    click(c, &format!("header.top nav a[href=\"{path}\"]")).await;
    at_path(c, path).await;
}

async fn text_of(c: &Client, css: &str) -> String {
    match c.find(Locator::Css(css)).await {
        Ok(e) => e.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

async fn browser(driver_port: u16, profile: &std::path::Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--window-size=1360,1000",
                format!("--user-data-dir={}", profile.display()),
            ]
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let url = format!("http://127.0.0.1:{driver_port}");
    let start = Instant::now();
    loop {
        match ClientBuilder::new(connector.clone())
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(c) => return c,
            Err(e) if start.elapsed() < Duration::from_secs(20) => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("chromedriver at {url}: {e}"),
        }
    }
}

#[tokio::test]
#[ignore = "needs Debian's chromium and chromium-driver (.ci/run installs them)"]
async fn an_operator_logs_in_watches_a_sweep_replays_a_letter_and_logs_out() {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: apt-get install chromium chromium-driver (.ci/run does)"
        );
    }
    let ns = Ns::new("console-browser");
    let mock = mock(50).await;
    mock.set_faults(vec![kickq::mock_zego::parse_fault("room=broken-*,code=2").unwrap()]);
    let db = TestDb::migrated().await;
    let (dir, token_file) = token_file(&ns, &format!("{TOKEN}\n"));
    let console_port = free_port();
    let console_addr = format!("127.0.0.1:{console_port}");
    let base = format!("http://{console_addr}");

    let broker = Broker::connect().await;
    broker.declare(&ns.names).await;
    let broken: Vec<Vec<u8>> = (0..5)
        .map(|i| job(&format!("broken-{i}"), &[&format!("user-{i}")], Some("spam")))
        .collect();
    broker.publish_many(&ns.names.requests, &broken).await;

    let mut cmd = binary_worker(
        &ns,
        &mock.base_url(),
        50,
        &[
            ("KICKQ_CONSOLE_ADDR", &console_addr),
            ("KICKQ_CONSOLE_TOKEN_FILE", token_file.to_str().unwrap()),
            ("DATABASE_URL", &db.url),
            ("RUST_LOG", "warn,kickq::console=info"),
        ],
    );
    cmd.stderr(std::process::Stdio::piped());
    let mut worker = ChildGuard(cmd.spawn().expect("the kickq binary starts"));
    let stderr = worker.0.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let dead = ns.names.dead.clone();
    wait_for(Duration::from_secs(30), "5 dead letters", || async {
        broker.depth(&dead).await == 5
    })
    .await;
    let sweep: Vec<Vec<u8>> = (0..SWEEP)
        .map(|i| job(&format!("sweep-{i}"), &[&format!("u{i}")], Some("bulk sweep")))
        .collect();
    broker.publish_many(&ns.names.bulk, &sweep).await;

    let driver_port = free_port();
    let _driver = Driver(
        std::process::Command::new(CHROMEDRIVER)
            .arg(format!("--port={driver_port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver starts"),
    );
    let profile = dir.join("profile");
    let c = browser(driver_port, &profile).await;

    // An unauthenticated visit lands on the login form.
    c.goto(&format!("{base}/")).await.unwrap();
    assert_eq!(c.current_url().await.unwrap().path(), "/login");
    shot(&c, "login").await;
    // A wrong token is refused.
    type_into(&c, "#token", "not-the-token").await;
    click(&c, "button[type=submit]").await;
    assert!(element(&c, ".notice")
        .await
        .text()
        .await
        .unwrap()
        .contains("not in the token file"));
    // The right one opens the overview.
    type_into(&c, "#token", TOKEN).await;
    click(&c, "button[type=submit]").await;
    at_path(&c, "/").await;

    // The sweep's rate shows on the overview (refreshed in place by htmx).
    let app = format!("article.app[data-app=\"{APP_ID}\"] .now");
    let started = Instant::now();
    let mut seen = 0.0;
    while seen <= 40.0 {
        assert!(
            started.elapsed() < Duration::from_secs(40),
            "the sweep's rate stayed at {seen}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Ok(e) = c.find(Locator::Css(&app)).await {
            seen = e
                .attr("data-rate")
                .await
                .ok()
                .flatten()
                .and_then(|r| r.parse().ok())
                .unwrap_or(0.0);
        }
    }
    assert!(seen <= 50.0, "never above the limit: {seen}");
    // Let the line grow a little before the picture.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let lanes = text_of(&c, "#live").await;
    assert!(lanes.contains("bulk") && lanes.contains("Dead letters: 5"), "{lanes}");
    shot(&c, "overview").await;

    // Filter the dead letters through the form.
    go(&c, "/dead").await;
    element(&c, "select[name=error]")
        .await
        .select_by_value("permanent")
        .await
        .unwrap();
    type_into(&c, "input[name=room]", "broken-3").await;
    click(&c, "form.filters button").await;
    until(Duration::from_secs(20), "the filtered list", || async {
        c.current_url()
            .await
            .unwrap()
            .query()
            .is_some_and(|q| q.contains("broken-3"))
    })
    .await;
    let summary = element(&c, "p.summary").await.text().await.unwrap();
    assert!(summary.starts_with("1 of 5 letter(s)"), "{summary}");
    let rows = c
        .find_all(Locator::Css("table.letters > tbody > tr.letter"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    click(&c, "table.letters details summary").await;
    let details = text_of(&c, "table.letters details").await;
    assert!(
        details.contains("kickq-error") && details.contains("broken-3"),
        "{details}"
    );
    shot(&c, "dead-letters").await;

    // The room is fixed: replay that letter into the live lane.
    mock.set_faults(Vec::new());
    click(&c, "input[name=key]").await;
    element(&c, "select[name=lane]")
        .await
        .select_by_value("live")
        .await
        .unwrap();
    click(&c, "button[value=replay-selected]").await;
    let question = element(&c, "p.question").await.text().await.unwrap();
    assert!(question.starts_with("Replay 1 of 5 letter(s)"), "{question}");
    assert!(question.contains(&ns.names.requests), "{question}");
    shot(&c, "confirm").await;
    click(&c, "form.confirm button").await;
    let result = element(&c, "p.notice.ok").await.text().await.unwrap();
    assert!(result.contains("replayed 1, kept 4"), "{result}");

    // History finds the user kicked, with a RequestId.
    go(&c, "/history").await;
    type_into(&c, "input[name=room]", "broken-3").await;
    click(&c, "form.filters button").await;
    until(Duration::from_secs(30), "broken-3 kicked in the history", || async {
        let table = text_of(&c, "table.history").await;
        if table.contains("kicked") {
            return true;
        }
        let _ = c.refresh().await;
        false
    })
    .await;
    let table = text_of(&c, "table.history").await;
    assert!(table.contains("user-3") && table.contains("dead_lettered"), "{table}");
    let ids = c.find_all(Locator::Css("table.history td code")).await.unwrap();
    let mut request_ids = Vec::new();
    for e in ids {
        request_ids.push(e.text().await.unwrap());
    }
    assert!(request_ids.iter().all(|r| !r.is_empty() && r != "-"), "{request_ids:?}");
    shot(&c, "history").await;

    // Workers: this worker holds the lock and is active.
    go(&c, "/workers").await;
    let shard = element(&c, "section.shard").await.text().await.unwrap();
    assert!(shard.contains("held") && shard.contains("active since"), "{shard}");
    shot(&c, "workers").await;

    // Log out: the console asks for the token again.
    click(&c, "form.logout button").await;
    at_path(&c, "/login").await;
    c.goto(&format!("{base}/dead")).await.unwrap();
    at_path(&c, "/login").await;
    c.close().await.unwrap();

    // The worker's log says what the console moved, and for which session.
    send_signal(worker.0.id(), "TERM");
    let _ = worker.0.wait();
    let lines = log.join().unwrap();
    let replayed: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("console: replayed 1 letter(s)"))
        .collect();
    assert_eq!(replayed.len(), 1, "{lines:#?}");
    assert!(replayed[0].contains("\"session\":\"session "), "{}", replayed[0]);
    assert!(lines.iter().any(|l| l.contains("console: logged out")), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.contains(TOKEN) || l.contains(SECRET)),
        "no secret in the log"
    );
    mock.shutdown().await;
    db.drop_db().await;
    let _ = std::fs::remove_dir_all(&dir);
}
