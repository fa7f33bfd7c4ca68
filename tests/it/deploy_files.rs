//! Keeps the deployment files honest: the Grafana dashboard names only metrics that `src/metrics.rs` defines
//! and the exporter really renders, it covers every metric, and the compose file, the Prometheus config and
//! the Dockerfile agree on the worker's metrics port.

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn read(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/kickq.json")).expect("the dashboard is valid JSON")
}

/// Metric names of `src/metrics.rs` by constant: every `pub const X: &str = "kickq_...";`.
fn metric_consts(source: &str) -> BTreeMap<String, String> {
    let mut consts = BTreeMap::new();
    for line in source.lines() {
        let Some(rest) = line.trim().strip_prefix("pub const ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(": &str = ") else {
            continue;
        };
        let value = value.trim_end_matches(';').trim_matches('"');
        if value.starts_with("kickq_") {
            consts.insert(name.to_owned(), value.to_owned());
        }
    }
    consts
}

/// Constants named by a macro or call of `src/metrics.rs`, e.g. `describe_histogram!(` or `Matcher::Full(`.
fn consts_after(source: &str, opener: &str) -> BTreeSet<String> {
    source
        .match_indices(opener)
        .map(|(i, _)| {
            let rest = source[i + opener.len()..].trim_start();
            rest.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Every series name the exporter can render for the metrics of `src/metrics.rs`:
/// the names themselves; `_sum` and `_count` for histograms; `_bucket` for the
/// histograms given buckets (the others render as summaries).
fn defined_series(source: &str) -> BTreeSet<String> {
    let consts = metric_consts(source);
    assert!(
        consts.len() >= 15,
        "found only {} metric constants in src/metrics.rs",
        consts.len()
    );
    let mut names: BTreeSet<String> = consts.values().cloned().collect();
    for c in consts_after(source, "describe_histogram!(") {
        let name = &consts[&c];
        names.insert(format!("{name}_sum"));
        names.insert(format!("{name}_count"));
    }
    for c in consts_after(source, "Matcher::Full(") {
        names.insert(format!("{}_bucket", consts[&c]));
    }
    names
}

fn strings<'a>(v: &'a Value, key: Option<&str>, out: &mut Vec<(Option<String>, &'a str)>) {
    match v {
        Value::String(s) => out.push((key.map(str::to_owned), s)),
        Value::Array(items) => items.iter().for_each(|x| strings(x, key, out)),
        Value::Object(map) => map.iter().for_each(|(k, x)| strings(x, Some(k), out)),
        _ => {}
    }
}

/// `kickq_*` identifiers in a string.
fn metric_refs(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut refs = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("kickq_").map(|p| p + i) {
        let starts_word = at == 0 || !(bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_');
        let end = text[at..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |p| p + at);
        if starts_word {
            refs.push(text[at..end].to_owned());
        }
        i = end;
    }
    refs
}

/// The dashboard's PromQL: every `expr`, and the template variables' queries.
fn queries(dash: &Value) -> Vec<String> {
    let mut all = Vec::new();
    strings(dash, None, &mut all);
    all.into_iter()
        .filter(|(k, _)| matches!(k.as_deref(), Some("expr" | "definition" | "query")))
        .map(|(_, s)| s.to_owned())
        .collect()
}

/// Metric names the dashboard uses, anywhere in it, that are not in `known`.
fn unknown_metrics(dash: &Value, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut all = Vec::new();
    strings(dash, None, &mut all);
    all.iter()
        .flat_map(|(_, s)| metric_refs(s))
        .filter(|m| !known.contains(m))
        .collect()
}

#[test]
fn dashboard_names_only_defined_metrics() {
    let known = defined_series(&read("src/metrics.rs"));
    let dash = dashboard();
    let unknown = unknown_metrics(&dash, &known);
    assert!(
        unknown.is_empty(),
        "the dashboard names metrics src/metrics.rs does not define: {unknown:?}"
    );

    let queries = queries(&dash);
    assert!(queries.len() >= 20, "only {} queries in the dashboard", queries.len());
    for q in &queries {
        assert!(!metric_refs(q).is_empty(), "a query that names no kickq metric: {q}");
    }
}

/// The alert rules name only metrics the exporter defines, with label
/// values it renders, and Prometheus loads them.
#[test]
fn alert_rules_name_only_defined_metrics() {
    let known = defined_series(&read("src/metrics.rs"));
    let rules = read("deploy/alerts.yml");
    let exprs: Vec<&str> = rules.lines().filter_map(|l| l.trim().strip_prefix("expr: ")).collect();
    assert!(exprs.len() >= 4, "{exprs:?}");
    let mut named = BTreeSet::new();
    for e in &exprs {
        named.extend(metric_refs(e));
    }
    let unknown: Vec<_> = named.iter().filter(|m| !known.contains(*m)).collect();
    assert!(unknown.is_empty(), "alerts name undefined metrics: {unknown:?}");
    for must in [
        "kickq_app_halted",
        "kickq_ledger_writes_total",
        "kickq_dead_letters_total",
    ] {
        assert!(named.contains(must), "no alert on {must}");
    }
    // The ledger's failure label is the one src/metrics.rs writes.
    assert!(read("src/metrics.rs").contains(r#"if ok { "ok" } else { "error" }"#));
    assert!(rules.contains(r#"result="error""#));
    assert!(read("deploy/prometheus.yml").contains("/etc/prometheus/alerts.yml"));
    assert!(read("docker-compose.yml").contains("./deploy/alerts.yml:/etc/prometheus/alerts.yml:ro"));
}

#[test]
fn dashboard_covers_every_metric() {
    let source = read("src/metrics.rs");
    let mut all = Vec::new();
    let dash = dashboard();
    strings(&dash, None, &mut all);
    let used: BTreeSet<String> = all.iter().flat_map(|(_, s)| metric_refs(s)).collect();
    let missing: Vec<_> = metric_consts(&source)
        .into_values()
        .filter(|name| {
            !used
                .iter()
                .any(|u| u == name || u.strip_prefix(name.as_str()).is_some_and(|s| s.starts_with('_')))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "metrics with no panel in the dashboard: {missing:?}"
    );
}

#[test]
fn dashboard_series_are_what_the_exporter_renders() {
    use kickq::testkit::metrics as m;
    let handle = m::install();
    m::message_consumed(true);
    m::register_app(1234567890, 50);
    m::users(1234567890, "kicked", 1);
    m::api_call(1234567890, "kicked", Some(0), std::time::Duration::from_millis(5), 3);
    m::app_halted(1234567890, true);
    m::coalesced(kickq::testkit::Reason::Full.as_str(), 5);
    m::token_wait(std::time::Duration::from_millis(2));
    m::pending(1, 1);
    m::calls_in_flight(1.0);
    m::dead_letter("validation");
    m::retry("transient");
    m::halted_apps(0);
    m::queue_ready("kickq.requests", 3);
    m::redelivery();
    m::ack_failure("stale");
    m::reconnect();
    m::ledger_write(true);
    m::active("default", true);
    m::forwarded("eu");
    m::takeover("released");
    let rendered: BTreeSet<String> = handle
        .render()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_owned())
        .collect();
    let not_rendered = unknown_metrics(&dashboard(), &rendered);
    assert!(
        not_rendered.is_empty(),
        "the exporter renders no series named {not_rendered:?}; it renders {rendered:?}"
    );
}

#[test]
fn the_checks_can_fail() {
    let known = defined_series(&read("src/metrics.rs"));
    let bad: Value = serde_json::json!({"panels": [{"targets": [
        {"expr": "sum(rate(kickq_messages_consumed_total[5m]))"},
        {"expr": "sum(rate(kickq_no_such_metric_total[5m]))"},
        {"expr": "rate(kickq_retries_total_bucket[5m])"},
    ]}]});
    let unknown = unknown_metrics(&bad, &known);
    let expected: BTreeSet<String> = ["kickq_no_such_metric_total", "kickq_retries_total_bucket"]
        .map(String::from)
        .into();
    assert_eq!(unknown, expected);
    assert_eq!(
        metric_refs("a(kickq_x{le=\"1\"}) / xkickq_y + kickq_z"),
        ["kickq_x", "kickq_z"]
    );
}

#[test]
fn deploy_files_agree_on_the_metrics_port() {
    let port = kickq::testkit::DEFAULT_METRICS_ADDR
        .rsplit_once(':')
        .expect("DEFAULT_METRICS_ADDR has a port")
        .1;
    let compose = read("docker-compose.yml");
    let prometheus = read("deploy/prometheus.yml");
    let dockerfile = read("Dockerfile");
    for (file, text, needle) in [
        (
            "docker-compose.yml",
            &compose,
            format!("KICKQ_METRICS_ADDR: 0.0.0.0:{port}"),
        ),
        ("docker-compose.yml", &compose, format!(":{port}:{port}\"")),
        ("deploy/prometheus.yml", &prometheus, format!("\"worker:{port}\"")),
        ("Dockerfile", &dockerfile, format!("EXPOSE {port}")),
        (
            "Dockerfile",
            &dockerfile,
            format!("ENV KICKQ_METRICS_ADDR=0.0.0.0:{port}"),
        ),
    ] {
        assert!(text.contains(&needle), "{file} should contain {needle:?}");
    }
}

#[test]
fn grafana_provisioning_matches_the_dashboard() {
    let datasource = read("deploy/grafana/provisioning/datasources/prometheus.yml");
    let provider = read("deploy/grafana/provisioning/dashboards/kickq.yml");
    let compose = read("docker-compose.yml");
    assert!(
        datasource.contains("uid: prometheus"),
        "the datasource's uid must be the dashboard's"
    );
    assert!(datasource.contains("url: http://prometheus:9090"));
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    assert!(compose.contains("./deploy/grafana/dashboards:/var/lib/grafana/dashboards"));
    assert!(compose.contains("./deploy/grafana/provisioning:/etc/grafana/provisioning"));
    assert!(compose.contains("./deploy/prometheus.yml:/etc/prometheus/prometheus.yml"));

    let mut all = Vec::new();
    let dash = dashboard();
    strings(&dash, None, &mut all);
    let uids: BTreeSet<&str> = all
        .iter()
        .filter(|(k, _)| k.as_deref() == Some("uid"))
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        uids,
        BTreeSet::from(["kickq", "prometheus"]),
        "the dashboard's uid and its datasource's"
    );
}
