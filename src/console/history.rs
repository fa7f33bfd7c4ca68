//! History: the ledger's outcome rows by room, user or job id (any of them, together narrowing), newest
//! first, with each call's RequestId: `kickq history` in a page.

use super::layout::{self, Page};
use super::state::{field, form_pairs, Access, St};
use crate::ledger::HistoryQuery;
use crate::table::escape;
use axum::extract::RawQuery;
use axum::response::Html;
use maud::html;

/// Rows a search shows: `kickq history`'s default.
pub(crate) const ROWS: i64 = crate::ledger::query::DEFAULT_LIMIT;

/// The ledger query of the search form; `None` when no room, user or job is given.
pub(crate) fn query_of(pairs: &[(String, String)]) -> Option<HistoryQuery> {
    let get = |n: &str| field(pairs, n).map(String::from);
    let q = HistoryQuery {
        room_id: get("room"),
        user_id: get("user"),
        job_id: get("job"),
        since: None,
        limit: ROWS,
    };
    (q.room_id.is_some() || q.user_id.is_some() || q.job_id.is_some()).then_some(q)
}

/// `GET /history?room=&user=&job=`.
pub(crate) async fn page(st: St, access: Access, RawQuery(raw): RawQuery) -> Html<String> {
    let console = st.0;
    let pairs = form_pairs(raw.unwrap_or_default().as_bytes());
    let value = |n: &str| field(&pairs, n).unwrap_or_default().to_owned();
    let q = query_of(&pairs);
    let rows = match &q {
        Some(q) => Some(console.source.history(q).await),
        None => None,
    };
    let body = html! {
        h1 { "History" }
        @if !console.source.has_ledger() {
            (layout::notice("warn", "The ledger is off on this worker (no DATABASE_URL): there is no history to search."))
        }
        form.filters method="get" action="/history" {
            label { "room" input name="room" value=(value("room")) placeholder="room id"; }
            label { "user" input name="user" value=(value("user")) placeholder="user id"; }
            label { "job" input name="job" value=(value("job")) placeholder="job id"; }
            button type="submit" { "Search" }
        }
        @match (&q, rows) {
            (None, _) => p.sub { "Give a room, a user or a job id (or several: each narrows the search)." },
            (_, None) => {},
            (Some(_), Some(Err(e))) => (super::overview::error(&e)),
            (Some(q), Some(Ok(rows))) => {
                p.summary {
                    (rows.len()) " row(s) for " (crate::ledger::query::describe(q))
                    @if rows.len() as i64 == ROWS { ", the newest " (ROWS) }
                    "."
                }
                @if !rows.is_empty() {
                    table.history {
                        thead { tr { th { "time" } th { "room" } th { "user" } th { "outcome" } th.n { "code" } th { "RequestId" } th { "job" } th { "reason" } th { "detail" } } }
                        tbody {
                            @for r in &rows {
                                tr {
                                    td { (layout::time(r.at)) }
                                    td { (escape(&r.room_id)) }
                                    td { (escape(&r.user_id)) }
                                    td { span class={"badge " (outcome_class(r.outcome.as_str()))} { (r.outcome.as_str()) } }
                                    td.n { @if let Some(c) = r.code { (c) } @else { "-" } }
                                    td { code { (escape(r.request_id.as_deref().unwrap_or("-"))) } }
                                    td { (escape(&r.job_id)) }
                                    td { (escape(r.reason.as_deref().unwrap_or("-"))) }
                                    td.detail { (escape(r.detail.as_deref().unwrap_or(""))) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let ns = &console.source.names.namespace;
    Html(layout::page("History", Page::History, ns, &access, None, body).into_string())
}

/// The badge colour of an outcome.
pub(crate) fn outcome_class(outcome: &str) -> &'static str {
    match outcome {
        "kicked" | "halted_then_resumed" | "nothing_to_do" | "skipped" => "ok",
        "dead_lettered" => "bad",
        _ => "warn",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_search_needs_a_room_user_or_job() {
        let p = |v: &[(&str, &str)]| -> Vec<(String, String)> {
            v.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(query_of(&p(&[])), None);
        assert_eq!(query_of(&p(&[("room", " ")])), None);
        let q = query_of(&p(&[("user", "u1")])).unwrap();
        assert_eq!((q.room_id, q.user_id.as_deref(), q.limit), (None, Some("u1"), ROWS));
        let q = query_of(&p(&[("room", "r"), ("job", "j")])).unwrap();
        assert_eq!((q.room_id.as_deref(), q.job_id.as_deref()), (Some("r"), Some("j")));
        assert_eq!(outcome_class("kicked"), "ok");
        assert_eq!(outcome_class("dead_lettered"), "bad");
        assert_eq!(outcome_class("retry_scheduled"), "warn");
    }
}
