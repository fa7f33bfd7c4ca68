//! The dead letters: `kickq dlq list`'s filters (error, code, room, app, since), each letter's body and
//! headers, and replay or purge of the filtered set or of selected letters, after a confirmation that counts
//! what will move. The passes are the CLI's (`crate::dlq::pass`, under the same lock): one implementation,
//! two front ends.

use super::layout::{self, Page};
use super::source::SourceError;
use super::state::{field, forbidden, form_pairs, Access, Console, St};
use crate::amqp::topology::Lane;
use crate::dlq::letter::{parse_error, Filter, Letter};
use crate::dlq::pass::{Action, SweepEnd};
use crate::table::escape;
use axum::body::Bytes;
use axum::extract::RawQuery;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup};

/// Most letters one page lists (`limit`): a page, not an export.
pub(crate) const MAX_SHOWN: usize = 1_000;

/// What the forms ask for: the filter (and the text of its fields, to fill
/// the form again), the selected letters, and the page's limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Query {
    /// The filter, selection included.
    pub filter: Filter,
    /// The fields as typed: `(name, value)` of error, code, room, app, since.
    pub fields: Vec<(&'static str, String)>,
    /// Letters listed at most.
    pub limit: usize,
}

/// The filter fields, in the form's order.
pub(crate) const FIELDS: [&str; 5] = ["error", "code", "room", "app", "since"];

/// Reads the filter from form or query pairs; `default_app` is the app a job
/// naming none belongs to. A field that does not parse is an error naming it.
pub(crate) fn parse_query(pairs: &[(String, String)], default_app: Option<u32>) -> Result<Query, String> {
    let mut q = Query {
        limit: crate::dlq::words::DEFAULT_LIST_LIMIT,
        ..Query::default()
    };
    q.filter.default_app = default_app;
    for name in FIELDS {
        let Some(v) = field(pairs, name) else { continue };
        q.fields.push((name, v.to_owned()));
        match name {
            "error" => q.filter.error = Some(parse_error(v)?),
            "code" => q.filter.code = Some(v.parse().map_err(|_| format!("code: {v:?} is not a number"))?),
            "room" => q.filter.room = Some(v.to_owned()),
            "app" => q.filter.app = Some(v.parse().map_err(|_| format!("app: {v:?} is not an AppId"))?),
            "since" => q.filter.since = Some(crate::ledger::query::parse_since(v).map_err(|e| format!("since: {e}"))?),
            _ => unreachable!("FIELDS lists the names matched here"),
        }
    }
    if let Some(v) = field(pairs, "limit") {
        q.limit = v
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MAX_SHOWN).contains(n))
            .ok_or_else(|| format!("limit: 1 to {MAX_SHOWN}, not {v:?}"))?;
    }
    Ok(q)
}

/// The selected letters of a form (`key` fields), at most [`MAX_SHOWN`]
/// (a page never lists more), else why not.
pub(crate) fn selected(pairs: &[(String, String)]) -> Result<std::collections::BTreeSet<String>, String> {
    let keys: std::collections::BTreeSet<String> = pairs
        .iter()
        .filter(|(k, v)| k == "key" && !v.trim().is_empty())
        .map(|(_, v)| v.trim().to_owned())
        .collect();
    match keys.len() {
        n if n > MAX_SHOWN => Err(format!("{n} letters selected: at most {MAX_SHOWN} at once")),
        _ => Ok(keys),
    }
}

/// What a form's button asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// Back to a lane.
    Replay,
    /// Remove.
    Purge,
}

impl Verb {
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Verb::Replay => ("replay", "replayed"),
            Verb::Purge => ("purge", "purged"),
        }
    }
}

/// The button's `action`: `replay` or `purge`, of the selected letters or
/// of every matching one.
pub(crate) fn parse_action(v: Option<&str>) -> Option<(Verb, bool)> {
    Some(match v? {
        "replay-selected" => (Verb::Replay, true),
        "replay-all" => (Verb::Replay, false),
        "purge-selected" => (Verb::Purge, true),
        "purge-all" => (Verb::Purge, false),
        _ => return None,
    })
}

fn lane_of(pairs: &[(String, String)]) -> Lane {
    match field(pairs, "lane") {
        Some("live") => Lane::Live,
        _ => Lane::Bulk,
    }
}

fn hidden_fields(q: &Query) -> Markup {
    html! {
        @for (k, v) in &q.fields { input type="hidden" name=(k) value=(v); }
    }
}

fn query_string(q: &Query) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &q.fields {
        s.append_pair(k, v);
    }
    s.finish()
}

fn filter_form(q: &Query) -> Markup {
    let value = |name: &str| {
        q.fields
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let errors = [
        "validation",
        "permanent",
        "retries_exhausted",
        "unknown_app",
        "delivery_limit",
        "expired",
    ];
    html! {
        form.filters method="get" action="/dead" {
            label { "error"
                select name="error" {
                    option value="" { "any" }
                    @for e in errors { option value=(e) selected[value("error") == e] { (e) } }
                }
            }
            label { "code" input name="code" value=(value("code")) size="10" placeholder="e.g. 2"; }
            label { "room" input name="room" value=(value("room")) placeholder="room id"; }
            label { "app" input name="app" value=(value("app")) size="10" placeholder="AppId"; }
            label { "since" input name="since" value=(value("since")) size="12" placeholder="2h, 7d or RFC 3339"; }
            button type="submit" { "Filter" }
            a.clear href="/dead" { "clear" }
        }
    }
}

fn letter_row(l: &Letter, default_app: Option<u32>) -> Markup {
    let users = l
        .job
        .as_ref()
        .map(|j| j.user_ids.iter().map(|u| escape(u)).collect::<Vec<_>>().join(", "))
        .unwrap_or_default();
    html! {
        tr.letter {
            td { input type="checkbox" name="key" value=(l.key) aria-label={"select letter " (l.position)}; }
            td.n { (l.position) }
            td { @if let Some(t) = l.failed_at { (layout::time(t)) } @else { "-" } }
            td { span.badge.bad { (l.error.as_str()) } }
            td.n { @if let Some(c) = l.code { (c) } @else { "-" } }
            td {
                @match (l.app_id(), default_app, l.job.is_some()) {
                    (Some(a), _, _) => (a),
                    (None, Some(d), true) => { (d) " " span.sub { "(default)" } },
                    _ => "-",
                }
            }
            td.room { (escape(l.room().unwrap_or("-"))) }
            td.users { (users) }
            td.n { (l.attempts) }
            td.detail { (escape(&l.detail)) }
        }
        tr.more {
            td {}
            td colspan="9" {
                details {
                    summary { "body and headers" }
                    dl {
                        dt { "key" } dd { code { (l.key) } }
                        dt { "job id" } dd { (escape(l.job_id.as_deref().unwrap_or("-"))) }
                        dt { "replayed before" } dd { (l.replays) }
                    }
                    pre.body { (escape(&l.body)) }
                    table.headers {
                        @for (k, v) in &l.headers { tr { th { (escape(k)) } td { (escape(v)) } } }
                    }
                }
            }
        }
    }
}

/// Runs a dlq pass in a task of its own and waits for it: dropping the
/// request (a closed tab) never cuts a pass short.
async fn detached<T: Send + 'static>(pass: impl std::future::Future<Output = T> + Send + 'static) -> T {
    match tokio::spawn(pass).await {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

fn page_of(console: &Console, access: &Access, body: Markup) -> Html<String> {
    let ns = &console.source.names.namespace;
    Html(layout::page("Dead letters", Page::Dead, ns, access, None, body).into_string())
}

fn default_app(console: &Console) -> Option<u32> {
    console.source.routing.default_app()
}

/// `GET /dead`: the filter form and the matching letters.
pub(crate) async fn page(st: St, access: Access, RawQuery(raw): RawQuery) -> Response {
    let console = st.0;
    let pairs = form_pairs(raw.unwrap_or_default().as_bytes());
    let q = match parse_query(&pairs, default_app(&console)) {
        Ok(q) => q,
        Err(e) => {
            let body = html! { h1 { "Dead letters" } (filter_form(&Query::default())) (layout::notice("bad", &e)) };
            return (StatusCode::BAD_REQUEST, page_of(&console, &access, body)).into_response();
        }
    };
    let listed = {
        let (c, filter, limit) = (console.clone(), q.filter.clone(), q.limit);
        detached(async move { c.source.letters(&filter, limit).await }).await
    };
    let dead = console.source.names.dead.clone();
    let body = html! {
        h1 { "Dead letters" }
        (filter_form(&q))
        @match &listed {
            Err(e) => (super::overview::error(e)),
            Ok(p) => {
                p.summary {
                    strong { (p.matched) } " of " (p.scanned) " letter(s) in " code { (dead) } " match " (q.filter.describe())
                    @if p.matched > p.letters.len() as u64 { "; showing the first " (p.letters.len()) }
                    "."
                }
                @if !p.letters.is_empty() {
                    form.letters method="post" action="/dead/confirm" {
                        input type="hidden" name="csrf" value=(access.csrf());
                        (hidden_fields(&q))
                        div.actions {
                            label { "replay into "
                                select name="lane" {
                                    option value="bulk" selected { "bulk" }
                                    option value="live" { "live" }
                                }
                            }
                            button type="submit" name="action" value="replay-selected" { "Replay selected" }
                            button type="submit" name="action" value="replay-all" { "Replay all " (p.matched) " matching" }
                            button.danger type="submit" name="action" value="purge-selected" { "Purge selected" }
                            button.danger type="submit" name="action" value="purge-all" { "Purge all " (p.matched) " matching" }
                        }
                        table.letters {
                            thead { tr {
                                th {} th.n { "#" } th { "failed at" } th { "error" } th.n { "code" } th { "app" }
                                th { "room" } th { "users" } th.n { "attempts" } th { "detail" }
                            } }
                            tbody { @for l in &p.letters { (letter_row(l, default_app(&console))) } }
                        }
                    }
                }
            }
        }
    };
    page_of(&console, &access, body).into_response()
}

struct Asked {
    q: Query,
    verb: Verb,
    selection: bool,
    lane: Lane,
    /// The form's fields.
    pairs: Vec<(String, String)>,
}

fn read_form(console: &Console, access: &Access, body: &[u8]) -> Result<Asked, Box<Response>> {
    let pairs = form_pairs(body);
    if !access.csrf_ok(field(&pairs, "csrf")) {
        return Err(Box::new(forbidden()));
    }
    let bad = |e: String| {
        let body = html! { h1 { "Dead letters" } (layout::notice("bad", &e)) p { a href="/dead" { "back" } } };
        Box::new((StatusCode::BAD_REQUEST, page_of(console, access, body)).into_response())
    };
    let Some((verb, selection)) = parse_action(field(&pairs, "action")) else {
        return Err(bad("no action: use one of the page's buttons".into()));
    };
    let mut q = parse_query(&pairs, default_app(console)).map_err(bad)?;
    if selection {
        q.filter.keys = selected(&pairs).map_err(bad)?;
        if q.filter.keys.is_empty() {
            return Err(bad("no letter selected: tick the letters first".into()));
        }
    }
    let lane = lane_of(&pairs);
    Ok(Asked {
        q,
        verb,
        selection,
        lane,
        pairs,
    })
}

fn destination(console: &Console, asked: &Asked) -> String {
    match asked.verb {
        Verb::Purge => String::new(),
        Verb::Replay => {
            let to = console.source.names.queue(asked.lane);
            if console.source.routing.is_sharded() {
                format!(" into each app's shard queue of the {} lane (else {to})", asked.lane)
            } else {
                format!(" into {to}")
            }
        }
    }
}

/// The CLI's question with the destination before its question mark, capitalised: `Replay 1 of 5 letter(s)
/// in q (matching ...) into q.requests?`.
pub(crate) fn question(prompt: &str, destination: &str) -> String {
    let mut s = format!("{}{destination}?", prompt.trim_end_matches('?'));
    if let Some(first) = s.get(..1) {
        s = first.to_uppercase() + &s[1..];
    }
    s
}

/// `POST /dead/confirm`: counts what the action would move (the pass `dlq
/// list` makes) and asks.
pub(crate) async fn confirm(st: St, access: Access, body: Bytes) -> Response {
    let console = st.0;
    let asked = match read_form(&console, &access, &body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let counting = {
        let (c, filter) = (console.clone(), asked.q.filter.clone());
        detached(async move { c.source.letters(&filter, 0).await })
    };
    let counted = match counting.await {
        Ok(p) => p,
        Err(e) => return page_of(&console, &access, super::overview::error(&e)).into_response(),
    };
    let (verb, _) = asked.verb.words();
    let dead = &console.source.names.dead;
    let back = format!("/dead?{}", query_string(&asked.q));
    let body = html! {
        h1 { "Dead letters" }
        @if counted.matched == 0 {
            (layout::notice("warn", &format!("None of the {} letter(s) in {dead} match {}: nothing to {verb}.", counted.scanned, asked.q.filter.describe())))
            p { a href=(back) { "back" } }
        } @else {
            form.confirm method="post" action="/dead/act" {
                p.question { (question(&crate::dlq::words::prompt(verb, counted.matched, counted.scanned, dead, &asked.q.filter), &destination(&console, &asked))) }
                @if asked.verb == Verb::Purge { p.notice.bad { "A purge cannot be undone." } }
                input type="hidden" name="csrf" value=(access.csrf());
                input type="hidden" name="count" value=(counted.matched);
                input type="hidden" name="lane" value=(asked.lane.as_str());
                input type="hidden" name="action" value=(field(&asked.pairs, "action").unwrap_or_default());
                (hidden_fields(&asked.q))
                @if asked.selection { @for k in &asked.q.filter.keys { input type="hidden" name="key" value=(k); } }
                button.danger[asked.verb == Verb::Purge] type="submit" { "Yes, " (verb) " " (counted.matched) " letter(s)" }
                " "
                a href=(back) { "Cancel" }
            }
        }
    };
    page_of(&console, &access, body).into_response()
}

/// `POST /dead/act`: the sweep, at most the confirmed count, logged at INFO
/// with what moved and who asked.
pub(crate) async fn act(st: St, access: Access, client: crate::serve::Client, body: Bytes) -> Response {
    let console = st.0;
    let asked = match read_form(&console, &access, &body) {
        Ok(a) => a,
        Err(r) => return *r,
    };
    let Some(count) = field(&asked.pairs, "count")
        .and_then(|c| c.parse::<u64>().ok())
        .filter(|c| *c > 0)
    else {
        return (
            StatusCode::BAD_REQUEST,
            "count: the confirmed number of letters is missing\n",
        )
            .into_response();
    };
    let action = match asked.verb {
        Verb::Replay => console.source.replay_action(asked.lane),
        Verb::Purge => Action::Purge,
    };
    let (verb, done) = asked.verb.words();
    let dead = console.source.names.dead.clone();
    let to = destination(&console, &asked);
    let filter = asked.q.filter.clone();
    let who = access.who();
    // The pass and its log line run in a task of their own: a browser that
    // closes the tab or loses the connection drops this handler, not the
    // pass, which settles what is in flight and says what it moved.
    let pass = {
        let (console, dead, to) = (console.clone(), dead.clone(), to.clone());
        async move {
            let started = std::time::Instant::now();
            let report = console.source.sweep(action, filter.clone(), Some(count)).await?;
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                session = %who,
                %client,
                action = verb,
                filter = %filter.describe(),
                confirmed = count,
                moved = report.taken,
                kept = report.kept + report.unread,
                in_doubt = report.in_flight,
                "console: {done} {} letter(s) of {dead}{to}",
                report.taken
            );
            Ok::<_, SourceError>((report, secs))
        }
    };
    let (report, secs) = match detached(pass).await {
        Ok(r) => r,
        Err(e) => return page_of(&console, &access, super::overview::error(&e)).into_response(),
    };
    let summary = crate::dlq::words::summary(&report, &dead, done, &asked.q.filter, secs);
    let failed = match &report.end {
        SweepEnd::Failed(e) => Some(SourceError::Broker(e.to_string())),
        _ => None,
    };
    let back = format!("/dead?{}", query_string(&asked.q));
    let body = html! {
        h1 { "Dead letters" }
        p.notice.ok data-moved=(report.taken) { (summary) }
        @if let Some(e) = &failed { (super::overview::error(e)) }
        p { a href=(back) { "back to the dead letters" } " · " a href="/history" { "history" } }
    };
    page_of(&console, &access, body).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::amqp::headers::DeadError;

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn the_query_parses_every_filter_or_names_the_bad_field() {
        let q = parse_query(
            &pairs(&[
                ("error", "permanent"),
                ("code", "-1"),
                ("room", " r1 "),
                ("app", "7"),
                ("since", "2024-05-01T00:00:00Z"),
                ("limit", "5"),
            ]),
            Some(3),
        )
        .unwrap();
        assert_eq!(q.filter.error, Some(DeadError::Permanent));
        assert_eq!(
            (q.filter.code, q.filter.app, q.filter.default_app),
            (Some(-1), Some(7), Some(3))
        );
        assert_eq!(q.filter.room.as_deref(), Some("r1"));
        assert!(q.filter.since.is_some());
        assert_eq!(q.limit, 5);
        assert_eq!(q.fields.len(), 5);
        assert_eq!(
            parse_query(&[], None).unwrap().limit,
            crate::dlq::words::DEFAULT_LIST_LIMIT
        );
        assert_eq!(
            parse_query(&pairs(&[("room", "")]), None).unwrap().filter,
            Filter::default()
        );
        for (bad, names) in [
            (("error", "nope"), "nope"),
            (("code", "x"), "code"),
            (("app", "-3"), "app"),
            (("since", "yesterday"), "since"),
            (("limit", "0"), "limit"),
            (("limit", "100000"), "limit"),
        ] {
            let e = parse_query(&pairs(&[bad]), None).unwrap_err();
            assert!(e.contains(names), "{bad:?}: {e}");
        }
        let qs = query_string(&parse_query(&pairs(&[("room", "a b&c")]), None).unwrap());
        assert_eq!(qs, "room=a+b%26c");
    }

    #[test]
    fn the_question_names_the_destination() {
        assert_eq!(
            question(
                "replay 1 of 5 letter(s) in q.dead (matching every letter)?",
                " into q.requests"
            ),
            "Replay 1 of 5 letter(s) in q.dead (matching every letter) into q.requests?"
        );
        assert_eq!(
            question("purge 2 of 2 letter(s) in q.dead (matching app 7)?", ""),
            "Purge 2 of 2 letter(s) in q.dead (matching app 7)?"
        );
    }

    #[test]
    fn actions_and_selection_by_table() {
        for (v, want) in [
            (Some("replay-selected"), Some((Verb::Replay, true))),
            (Some("replay-all"), Some((Verb::Replay, false))),
            (Some("purge-selected"), Some((Verb::Purge, true))),
            (Some("purge-all"), Some((Verb::Purge, false))),
            (Some("delete"), None),
            (None, None),
        ] {
            assert_eq!(parse_action(v), want, "{v:?}");
        }
        assert_eq!(
            selected(&pairs(&[
                ("key", "b"),
                ("room", "r"),
                ("key", " "),
                ("key", "a"),
                ("key", "b")
            ]))
            .unwrap(),
            ["a", "b"].map(String::from).into()
        );
        let many: Vec<(String, String)> = (0..=MAX_SHOWN).map(|i| ("key".into(), i.to_string())).collect();
        assert!(selected(&many).unwrap_err().contains("at most"));
        assert_eq!(lane_of(&pairs(&[("lane", "live")])), Lane::Live);
        assert_eq!(lane_of(&pairs(&[("lane", "x")])), Lane::Bulk);
        assert_eq!(lane_of(&[]), Lane::Bulk, "a replay goes to bulk unless told");
    }
}
