//! Workers: for each shard, whether its leadership lease is held and its queues have consumers (the broker,
//! over AMQP), this worker's own role and since when, and, with `KICKQ_MANAGEMENT_URL`, every worker
//! session of the shard: the lease holder (active) and the standbys, with host and connection time.

use super::layout::{self, Page};
use super::state::{Access, St};
use crate::health::Role;
use axum::response::Html;
use chrono::Utc;
use maud::{html, Markup};

fn role_badge(role: Role) -> Markup {
    let class = match role {
        Role::Active => "ok",
        Role::Standby => "",
        Role::Connecting => "warn",
    };
    html! { span class={"badge " (class)} { (role.as_str()) } }
}

/// `GET /workers`.
pub(crate) async fn page(st: St, access: Access) -> Html<String> {
    let console = st.0;
    let src = &console.source;
    let queues = src.queues().await;
    let fleet = src.fleet().await;
    let now = Utc::now();
    let body = html! {
        h1 { "Workers" }
        @if let Err(e) = &queues { (super::overview::error(e)) }
        @for shard in src.shards() {
            @let name = shard.to_string();
            @let q = queues.as_ref().ok().and_then(|q| q.shards.iter().find(|s| s.shard == name));
            @let mine = src.health.shard(&name);
            section.shard {
                h2 { "Shard " (name) }
                table.kv {
                    tr { th { "leadership lock" } td {
                        @match q {
                            Some(q) if q.lock_held => span.badge.ok { "held" },
                            Some(_) => span.badge.bad { "free: no active worker" },
                            None => "?",
                        }
                        " " code { (src.names.for_shard(&shard).leader) }
                    } }
                    tr { th { "consumers (live + bulk)" } td {
                        @if let Some(q) = q { (q.consumers.0) " + " (q.consumers.1) } @else { "?" }
                    } }
                    tr { th { "this worker" } td {
                        @match &mine {
                            Some(s) => {
                                (role_badge(s.role()))
                                @if let Some(t) = s.role_since() { " since " (layout::time(t)) " (" (layout::ago(t, now)) ")" }
                                @if !s.is_connected() { " " span.badge.bad { "broker not connected" } }
                            }
                            None => span.sub { "does not serve this shard" },
                        }
                    } }
                }
                @match &fleet {
                    None => p.sub { "Set KICKQ_MANAGEMENT_URL on the worker to list every worker of the shard (the broker's connection list)." },
                    Some(Err(e)) => (super::overview::error(e)),
                    Some(Ok(f)) => {
                        @for w in f.warnings.iter().filter(|w| w.starts_with(&format!("shard {name}:"))) {
                            p.notice.warn { (w) }
                        }
                        @let members = f.shards.iter().find(|(s, _)| *s == name).map(|(_, m)| m.as_slice()).unwrap_or_default();
                        @if members.is_empty() {
                            p.sub { "No worker session of this shard is connected." }
                        } @else {
                            table {
                                thead { tr { th { "worker" } th { "host" } th { "role" } th { "connected since" } } }
                                tbody {
                                    @for m in members {
                                        tr {
                                            td { code { (m.name) } }
                                            td { (m.host) }
                                            td { (role_badge(if m.active { Role::Active } else { Role::Standby })) }
                                            td { @if let Some(t) = m.since { (layout::time(t)) " (" (layout::ago(t, now)) ")" } @else { "-" } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    let ns = &src.names.namespace;
    Html(layout::page("Workers", Page::Workers, ns, &access, None, body).into_string())
}
