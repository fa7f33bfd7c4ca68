//! `kickq events tail`: the operator's live view of outcome events. Binds a temporary queue to `<ns>.events`
//! and prints each event as it comes, one line each, or its raw JSON.

use super::signals::Interrupted;
use crate::amqp::connect::connect;
use crate::amqp::topology;
use crate::cli::flags::BrokerArgs;
use crate::outcome::event::{binding_key, Outcome, UNKNOWN_APP};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use std::io::Write;
use tokio_util::sync::CancellationToken;

/// Most events the tail's queue holds while its reader is slow (a paused
/// terminal, `| less`); past it the oldest are dropped. With acks and a small
/// prefetch the backlog stays on the broker and bounded: a slow tail never
/// grows without limit, on the broker or in this process.
pub(crate) const TAIL_BACKLOG: i64 = 10_000;
/// Events the broker pushes before the tail has printed and acked them.
const TAIL_PREFETCH: u16 = 100;

/// `kickq events`: outcome events (published with `KICKQ_EVENTS=on`).
#[derive(Debug, clap::Args)]
pub(crate) struct EventsArgs {
    #[command(subcommand)]
    command: EventsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum EventsCommand {
    /// Bind a temporary queue to <ns>.events and print events as they come, until Ctrl-C (exit 130).
    Tail(TailArgs),
}

/// `kickq events tail`.
#[derive(Debug, clap::Args)]
struct TailArgs {
    #[command(flatten)]
    broker: BrokerArgs,
    /// Only events of this outcome: kicked, retrying, partial, failed or expired.
    #[arg(long, value_parser = |s: &str| s.parse::<Outcome>())]
    outcome: Option<Outcome>,
    /// Only events of this AppId (or `unknown`: deliveries whose app could not be read).
    #[arg(long, value_parser = parse_app)]
    app: Option<String>,
    /// Print each event's body (CloudEvents JSON), one a line, instead of a summary line.
    #[arg(long)]
    json: bool,
}

/// An AppId, or `unknown`: one word of a routing key.
fn parse_app(s: &str) -> Result<String, String> {
    if s == UNKNOWN_APP || s.parse::<u32>().is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not an AppId (digits) nor `unknown`"))
    }
}

/// Runs `kickq events`.
pub(crate) async fn run(args: EventsArgs) -> anyhow::Result<()> {
    match args.command {
        EventsCommand::Tail(a) => tail(a).await,
    }
}

async fn tail(args: TailArgs) -> anyhow::Result<()> {
    let (url, names) = args.broker.resolve()?;
    let conn = connect(&url, &format!("kickq-events-tail-{}", std::process::id()))
        .await
        .map_err(|e| anyhow::Error::msg(crate::amqp::connect::explain(&url, &e).to_string()))?;
    let channel = conn.create_channel().await?;
    channel
        .basic_qos(TAIL_PREFETCH, lapin::options::BasicQosOptions::default())
        .await?;
    // The same declaration as the worker's, so tailing before any worker
    // published works; it routes nothing until a worker runs with events on.
    topology::declare_events(&channel, &names).await?;
    let queue = channel
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            {
                let mut args = FieldTable::default();
                args.insert(
                    "x-max-length".into(),
                    lapin::types::AMQPValue::LongLongInt(TAIL_BACKLOG),
                );
                args.insert(
                    "x-overflow".into(),
                    lapin::types::AMQPValue::LongString("drop-head".into()),
                );
                args
            },
        )
        .await?;
    let key = binding_key(args.outcome, args.app.as_deref());
    channel
        .queue_bind(
            queue.name().clone(),
            names.events.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.name().clone(),
            "kickq-events-tail".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    eprintln!("kickq: tailing {} with binding {key} (Ctrl-C to stop)", names.events);
    let stop = CancellationToken::new();
    tokio::spawn(crate::cli::signals::cancel_on_signal(stop.clone()));
    loop {
        let next = tokio::select! {
            _ = stop.cancelled() => break,
            next = consumer.next() => next,
        };
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(anyhow::Error::msg(crate::amqp::connect::describe(&e))),
            None => anyhow::bail!("the broker cancelled the tail's consumer"),
        };
        let line = match args.json {
            true => String::from_utf8_lossy(&delivery.data).into_owned(),
            false => summary(&delivery.data),
        };
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            // A closed pipe (`| head`): the reader is gone, so is the tail.
            return Ok(());
        }
        drop(out);
        // Acked once printed: the next event comes only as the reader keeps up.
        delivery.acker.ack(lapin::options::BasicAckOptions::default()).await?;
    }
    crate::amqp::connect::close(&conn, "tail done").await;
    Err(Interrupted.into())
}

/// One line for an event body: time, outcome, app, room, job id, and how
/// many users ended each way. A body that is not an event shows as such.
pub(crate) fn summary(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return format!("(not JSON: {} bytes)", body.len());
    };
    let d = &v["data"];
    let text = |x: &serde_json::Value| match x {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let count = |k: &str| d["users"][k].as_array().map_or(0, Vec::len);
    let app = match &d["app_id"] {
        serde_json::Value::Null => UNKNOWN_APP.to_owned(),
        a => text(a),
    };
    let mut line = format!(
        "{} {:<8} app {} room {} job {} kicked {} nothing_to_do {} already_done {} retrying {} dead_lettered {}",
        text(&v["time"]),
        text(&d["outcome"]),
        app,
        text(&d["room_id"]),
        text(&d["job_id"]),
        count("kicked"),
        count("nothing_to_do"),
        count("already_done"),
        count("retrying"),
        count("dead_lettered"),
    );
    if let Some(e) = d.get("error").filter(|e| !e.is_null()) {
        line.push_str(&format!(" error {}", text(&e["error"])));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_by_table() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"time":"2026-12-01T12:00:00.250Z","data":{"outcome":"partial","app_id":1234567890,"room_id":"room-42","job_id":"j","users":{"kicked":["a"],"nothing_to_do":[],"already_done":[],"retrying":[],"dead_lettered":[{"user_id":"b"}]}}}"#,
                "2026-12-01T12:00:00.250Z partial  app 1234567890 room room-42 job j kicked 1 nothing_to_do 0 already_done 0 retrying 0 dead_lettered 1",
            ),
            (
                r#"{"time":"t","data":{"outcome":"failed","app_id":null,"room_id":null,"job_id":null,"users":{},"error":{"error":"validation"}}}"#,
                "t failed   app unknown room - job - kicked 0 nothing_to_do 0 already_done 0 retrying 0 dead_lettered 0 error validation",
            ),
            ("{", "(not JSON: 1 bytes)"),
        ];
        for (body, want) in cases {
            assert_eq!(summary(body.as_bytes()), *want);
        }
    }

    #[test]
    fn apps_by_table() {
        assert_eq!(parse_app("1234567890"), Ok("1234567890".into()));
        assert_eq!(parse_app("unknown"), Ok("unknown".into()));
        for bad in ["*", "#", "a.b", "", "-1"] {
            assert!(parse_app(bad).is_err(), "{bad:?}");
        }
    }
}
