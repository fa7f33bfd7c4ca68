//! The overview: per app its calls per second against its limit (a 5-minute line) and whether it is halted or
//! slowed down, with the code and since when; per lane the users kicked, dead-lettered and waiting; the queue
//! depths. Its live part refreshes itself every few seconds through htmx, or the whole page through a
//! `<noscript>` meta refresh.

use super::layout::{self, Page};
use super::source::{Queues, SourceError};
use super::state::{Access, Console, St, REFRESH_SECS};
use crate::amqp::topology::Lane;
use axum::response::Html;
use chrono::Utc;
use maud::{html, Markup};
use tokio::time::Instant;

/// Seconds the "now" rate averages over: the last ten whole seconds.
pub(crate) const RATE_SECS: usize = 10;

/// The whole seconds of a series: its last value is the current,
/// unfinished second, left out of the rate and the line.
pub(crate) fn whole_seconds(series: &[u64]) -> &[u64] {
    &series[..series.len().saturating_sub(1)]
}

/// Calls per second over the last [`RATE_SECS`] whole seconds.
pub(crate) fn recent_rate(whole: &[u64]) -> f64 {
    let tail = &whole[whole.len().saturating_sub(RATE_SECS)..];
    if tail.is_empty() {
        return 0.0;
    }
    tail.iter().sum::<u64>() as f64 / tail.len() as f64
}

/// An app's state in words, and its badge's class.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AppState {
    /// Calls go at the full rate.
    Running,
    /// Only probes go: the code, what it means, since when (seconds ago).
    Halted {
        /// The code.
        code: i64,
        /// Seconds since it began.
        for_secs: u64,
    },
    /// Below its rate after a rate answer.
    Slowed {
        /// The fraction of the rate.
        factor: f64,
        /// The answer's code.
        code: i64,
        /// Seconds since it came.
        for_secs: u64,
    },
    /// Another worker's shard serves it.
    Elsewhere,
}

fn state_of(console: &Console, app_id: u32, served_here: bool, now: Instant) -> AppState {
    if !served_here {
        return AppState::Elsewhere;
    }
    let gate = &console.source.gate;
    if let Some((_, h)) = gate.halted_apps().into_iter().find(|(a, _)| *a == app_id) {
        return AppState::Halted {
            code: h.code,
            for_secs: now.saturating_duration_since(h.since).as_secs(),
        };
    }
    if let Some((_, s)) = gate.slowed_apps(now).into_iter().find(|(a, _)| *a == app_id) {
        return AppState::Slowed {
            factor: s.factor,
            code: s.code,
            for_secs: now.saturating_duration_since(s.since).as_secs(),
        };
    }
    AppState::Running
}

fn since(for_secs: u64) -> String {
    let now = Utc::now();
    let at = now - chrono::Duration::seconds(for_secs as i64);
    format!("since {} ({} ago)", layout::time(at), layout::ago(at, now))
}

fn badge(state: &AppState) -> Markup {
    match state {
        AppState::Running => html! { span.badge.ok { "running" } },
        AppState::Elsewhere => html! { span.badge { "served by another shard's worker" } },
        AppState::Halted { code, for_secs } => html! {
            span.badge.bad { "halted: code " (code) }
            span.why { (crate::zego::codes::describe(*code)) "; probing, " (since(*for_secs)) }
        },
        AppState::Slowed { factor, code, for_secs } => html! {
            span.badge.warn { "slowed to " (format!("{:.0}", factor * 100.0)) "%: code " (code) }
            span.why { (crate::zego::codes::describe(*code)) ", " (since(*for_secs)) }
        },
    }
}

fn count(n: Option<u32>) -> Markup {
    match n {
        Some(n) => html! { (n) },
        None => html! { span.absent title="the queue does not exist yet" { "absent" } },
    }
}

/// The live part: apps, lanes, queues.
pub(crate) async fn live_part(console: &Console) -> Markup {
    let queues = console.source.queues().await;
    // Read after the broker's answer: the budgets are read at this instant.
    let now = Instant::now();
    let health = &console.source.health;
    let ready = |lane: Lane, q: &Queues| -> u64 {
        q.shards
            .iter()
            .map(|s| u64::from(if lane == Lane::Live { s.live } else { s.bulk }.unwrap_or(0)))
            .sum()
    };
    html! {
        div #live hx-get="/live" hx-trigger={"every " (REFRESH_SECS) "s"} hx-swap="outerHTML" {
            section {
                h2 { "Apps" }
                div.apps {
                    @for app in &console.source.apps {
                        @let all = console.source.health.live().app_call_series(app.app_id);
                        @let series = whole_seconds(&all);
                        @let rate = recent_rate(series);
                        @let state = state_of(console, app.app_id, app.served_here, now);
                        article.app data-app=(app.app_id) {
                            header {
                                h3 { "AppId " (app.app_id) }
                                @if console.source.routing.is_sharded() { span.shard { "shard " (app.shard) } }
                                (badge(&state))
                            }
                            p.rate {
                                span.now data-rate=(format!("{rate:.1}")) { (format!("{rate:.1}")) }
                                " calls/s of " (app.rate) " "
                                span.sub { "(last " (RATE_SECS) " s)" }
                            }
                            (super::chart::calls(series, app.rate, &format!("AppId {} calls per second, last 5 minutes", app.app_id)))
                        }
                    }
                }
            }
            section {
                h2 { "Lanes" }
                table {
                    thead { tr { th { "lane" } th.n { "users kicked" } th.n { "users dead-lettered" } th.n { "users pending" } th.n { "messages waiting" } th.n { "messages held" } } }
                    tbody {
                        @for lane in Lane::ALL {
                            @let p = health.lane_progress(lane);
                            tr {
                                td { (lane) }
                                td.n { (p.kicked) }
                                td.n { (p.dead_lettered) }
                                td.n { (p.pending_users) }
                                td.n { @match &queues { Ok(q) => (ready(lane, q)), Err(_) => "?" } }
                                td.n { (health.unacked_of(lane)) }
                            }
                        }
                    }
                }
                p.sub { "Users since this worker started; pending: in the coalescer now; waiting: messages ready in the lane's queues; held: delivered to this worker, not yet acked." }
            }
            section {
                h2 { "Queues" }
                @match &queues {
                    Err(e) => (layout::notice("bad", &e.to_string())),
                    Ok(q) => {
                        table.queues {
                            thead { tr { th { "shard" } th.n { "live" } th.n { "bulk" } th.n { "retry" } th.n { "consumers" } th { "lock" } } }
                            tbody {
                                @for s in &q.shards {
                                    tr {
                                        td { (s.shard) }
                                        td.n { (count(s.live)) }
                                        td.n { (count(s.bulk)) }
                                        td.n { (s.retry) }
                                        td.n { (s.consumers.0) " + " (s.consumers.1) }
                                        td { @if s.lock_held { span.badge.ok { "held" } } @else { span.badge.bad { "free: no active worker" } } }
                                    }
                                }
                            }
                        }
                        p.dead { "Dead letters: " strong { (count(q.dead)) } " " a href="/dead" { "see them" } }
                    }
                }
            }
            p.sub.stamp { "Read at " (layout::time(Utc::now())) "; refreshes every " (REFRESH_SECS) " s." }
        }
    }
}

/// `GET /`.
pub(crate) async fn page(st: St, access: Access) -> Html<String> {
    let console = st.0;
    let live = live_part(&console).await;
    let ns = console.source.names.namespace.clone();
    Html(layout::page("Overview", Page::Overview, &ns, &access, Some(REFRESH_SECS), live).into_string())
}

/// `GET /live`: the live part alone, for htmx.
pub(crate) async fn live(st: St, _access: Access) -> Html<String> {
    Html(live_part(&st.0).await.into_string())
}

/// An error of the source, as the pages show it.
pub(crate) fn error(e: &SourceError) -> Markup {
    layout::notice("bad", &e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_leaves_out_the_current_second() {
        for (series, want) in [
            (vec![], 0.0),
            (vec![9], 0.0),
            (vec![50, 999], 50.0),
            ([vec![0; 290], vec![50; 10], vec![7]].concat(), 50.0),
            ([vec![50; 5], vec![0; 5], vec![3]].concat(), 25.0),
        ] {
            assert_eq!(recent_rate(whole_seconds(&series)), want, "{series:?}");
        }
        assert_eq!(whole_seconds(&[1, 2, 3]), &[1, 2]);
    }
}
