//! The page shell every console page shares: head (styles, htmx, an optional refresh), the navigation with
//! the namespace and version, the logout form, and small pieces (times, notices) the pages reuse.

use super::state::Access;
use chrono::{DateTime, SecondsFormat, Utc};
use maud::{html, Markup, DOCTYPE};

/// Which page is shown, for the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Page {
    /// `/`.
    Overview,
    /// `/dead`.
    Dead,
    /// `/history`.
    History,
    /// `/workers`.
    Workers,
}

const NAV: [(Page, &str, &str); 4] = [
    (Page::Overview, "/", "Overview"),
    (Page::Dead, "/dead", "Dead letters"),
    (Page::History, "/history", "History"),
    (Page::Workers, "/workers", "Workers"),
];

/// A whole page: `refresh` adds a `<meta http-equiv=refresh>` inside
/// `<noscript>`, so a browser without JavaScript still refreshes it.
pub(crate) fn page(
    title: &str,
    current: Page,
    namespace: &str,
    access: &Access,
    refresh: Option<u64>,
    body: Markup,
) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                (head_common(title))
                meta name="htmx-config" content=r#"{"includeIndicatorStyles":false,"allowEval":false}"#;
                script src="/assets/htmx.min.js" defer {}
                @if let Some(secs) = refresh {
                    noscript { meta http-equiv="refresh" content=(secs); }
                }
            }
            body {
                header.top {
                    a.brand href="/" { "kickq" span { "console" } }
                    nav {
                        @for (p, href, label) in NAV {
                            a href=(href) class=[(p == current).then_some("on")] { (label) }
                        }
                    }
                    span.ns { "namespace " code { (namespace) } }
                    @if let Access::Session { csrf, .. } = access {
                        form.logout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main { (body) }
                footer { "kickq " (crate::VERSION) }
            }
        }
    }
}

/// What every page's `<head>` starts with: charset, viewport, title, styles.
pub(crate) fn head_common(title: &str) -> Markup {
    html! {
        meta charset="utf-8";
        meta name="viewport" content="width=device-width, initial-scale=1";
        title { (title) " · kickq console" }
        link rel="stylesheet" href="/assets/style.css";
    }
}

/// A page of its own for a notice (an error, a result): the shell without
/// navigation state.
pub(crate) fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={"notice " (kind)} { (text) } }
}

/// A time as the pages show it: UTC, whole seconds.
pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true).replace('T', " ")
}

/// How long ago `t` was, in the largest whole unit: `42s`, `5m`, `3h`, `2d`.
pub(crate) fn ago(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let s = (now - t).num_seconds().max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn ages_by_table() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap();
        for (secs, want) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (7199, "119m"),
            (7200, "2h"),
            (172_800, "2d"),
            (-5, "0s"),
        ] {
            assert_eq!(ago(now - chrono::Duration::seconds(secs), now), want, "{secs}");
        }
        assert_eq!(time(now), "2024-05-01 12:00:00Z");
    }

    #[test]
    fn the_shell_escapes_and_marks_the_page() {
        let a = Access::Session {
            label: "l".into(),
            token: "ops".into(),
            csrf: "tok".into(),
        };
        let html = page("<x>", Page::Dead, "ns<1>", &a, Some(3), html! { "body" }).into_string();
        assert!(html.contains("&lt;x&gt; · kickq console"), "{html}");
        assert!(html.contains("ns&lt;1&gt;"));
        assert!(html.contains(r#"<a href="/dead" class="on">"#), "{html}");
        assert!(html.contains(r#"name="csrf" value="tok""#));
        assert!(
            html.contains(r#"<noscript><meta http-equiv="refresh" content="3"></noscript>"#),
            "{html}"
        );
        let bearer = page("t", Page::Overview, "ns", &Access::Bearer("ci".into()), None, html! {}).into_string();
        assert!(!bearer.contains("Log out") && !bearer.contains("refresh"));
    }
}
