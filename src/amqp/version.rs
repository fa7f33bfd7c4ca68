//! The broker's RabbitMQ version: read from the AMQP handshake (`connection.start`'s server properties), and
//! what each version range is known to do to kickq (`kickq check` prints both).
//!
//! lapin reads `connection.start` but keeps none of its server properties,
//! so [`probe`] opens a socket of its own, sends the protocol header, parses
//! the one frame the broker answers with (amq-protocol's parser, the one
//! lapin uses) and closes without logging in: no credentials are sent.
//! A TLS URL (`amqps://`) is not probed; the management API's overview
//! (`rabbitmq_version`) stands in when `kickq check` has it.

use lapin::protocol::{connection::AMQPMethod, AMQPClass};
use lapin::types::AMQPValue;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Longest wait for the broker's `connection.start`: it is the first thing a
/// broker sends, within milliseconds of the protocol header.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// The broker's product and version, from `connection.start`. `Ok(None)`
/// for a TLS URL (not probed).
pub(crate) async fn probe(amqp_url: &str) -> Result<Option<(String, String)>, String> {
    let url = url::Url::parse(amqp_url).map_err(|e| format!("not a URL: {e}"))?;
    if url.scheme() != "amqp" {
        return Ok(None);
    }
    let host = url.host_str().unwrap_or("localhost").to_owned();
    let port = url.port().unwrap_or(5672);
    let read = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        s.write_all(b"AMQP\x00\x00\x09\x01").await.map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(1024);
        loop {
            if let Some(found) = server_version(&buf)? {
                return Ok(found);
            }
            let n = s.read_buf(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the broker closed the connection before connection.start".into());
            }
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, read).await {
        Ok(r) => r.map(Some),
        Err(_) => Err(format!("no connection.start within {}s", PROBE_TIMEOUT.as_secs())),
    }
}

/// The broker's version from the management API's overview at `base` (for
/// a TLS broker, whose handshake [`probe`] does not read).
pub(crate) async fn from_management(base: &str, amqp_url: &str) -> Result<Option<(String, String)>, String> {
    use crate::dlq::policy::{get, Reply};
    match get(base, amqp_url, |_| "overview".to_owned()).await {
        Reply::Queue(v) => Ok(v["rabbitmq_version"]
            .as_str()
            .map(|ver| ("RabbitMQ".to_owned(), ver.to_owned()))),
        Reply::Status(s) => Err(format!("the management API answered HTTP {s}")),
        Reply::Unreachable(why) => Err(format!("cannot reach the management API: {why}")),
    }
}

/// The product and version of a `connection.start` frame at the head of
/// `bytes`; `Ok(None)` while the frame is incomplete.
fn server_version(bytes: &[u8]) -> Result<Option<(String, String)>, String> {
    match amq_protocol::frame::parse_frame(bytes) {
        Ok((_, amq_protocol::frame::AMQPFrame::Method(_, AMQPClass::Connection(AMQPMethod::Start(start))))) => {
            let text = |key: &str| match start.server_properties.inner().get(key) {
                Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                _ => "unknown".to_owned(),
            };
            Ok(Some((text("product"), text("version"))))
        }
        Ok(_) => Err("the broker's first frame is not connection.start".into()),
        Err(e) if e.is_incomplete() => Ok(None),
        Err(_) => Err("not an AMQP 0-9-1 broker".into()),
    }
}

/// A known issue of a RabbitMQ version range, as `kickq check` words it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Note {
    /// What goes wrong.
    pub issue: &'static str,
    /// What to do.
    pub fix: &'static str,
}

/// The known issues of RabbitMQ `version` (`major.minor.patch`, a suffix
/// such as `-rc.1` ignored) for kickq, from the release notes and source of
/// 3.13, 4.0, 4.1 and 4.2 (4.2's Khepri, which keeps a lost node's
/// exclusive queues, is none: kickq's locks are leases, not exclusive
/// queues). Empty for a version with none, or one that cannot be read.
pub(crate) fn notes(version: &str) -> Vec<Note> {
    let Some(v) = parse(version) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if ((3, 13, 3)..=(3, 13, 4)).contains(&v) {
        out.push(Note {
            issue: "3.13.3 and 3.13.4 mangle the time of a re-published x-death: `kickq dlq` shows wrong death \
                    times for letters a pass re-appended",
            fix: "upgrade to 3.13.5 or later",
        });
    }
    if ((4, 0, 0)..=(4, 0, 4)).contains(&v) {
        out.push(Note {
            issue: "4.0.0 to 4.0.4 can crash dead-lettering, during an upgrade from 3.13, of messages re-published \
                    with x-death (replayed or re-appended letters)",
            fix: "upgrade to 4.0.5 or later before upgrading a 3.13 cluster",
        });
    }
    out
}

fn parse(version: &str) -> Option<(u32, u32, u32)> {
    let core = version.split(['-', '+']).next()?;
    let mut it = core.split('.').map(|p| p.parse::<u32>().ok());
    // All three parts: "4" alone says nothing of the patch release.
    Some((it.next()??, it.next()??, it.next()??))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_by_version_range() {
        let issues = |v: &str| {
            notes(v)
                .iter()
                .map(|n| n.issue.split(' ').next().unwrap())
                .collect::<Vec<_>>()
        };
        let cases: &[(&str, &[&str])] = &[
            ("3.10.8", &[]),
            ("3.12.14", &[]),
            ("3.13.0", &[]),
            ("3.13.3", &["3.13.3"]),
            ("3.13.4", &["3.13.3"]),
            ("3.13.5", &[]),
            ("3.13.7", &[]),
            ("4.0.0", &["4.0.0"]),
            ("4.0.4", &["4.0.0"]),
            ("4.0.5", &[]),
            ("4.0.9", &[]),
            ("4.1.8", &[]),
            ("4.2.0", &[]),
            ("4.2.5", &[]),
            ("4.2.9", &[]),
            ("4.3.0-rc.1", &[]),
            ("4", &[]),
            ("unknown", &[]),
            ("", &[]),
        ];
        for (v, want) in cases {
            assert_eq!(issues(v), *want, "{v}");
        }
    }

    #[test]
    fn the_handshake_frame_is_read_whole_or_waited_for() {
        // A connection.start as RabbitMQ sends it: frame type 1, channel 0,
        // size; class 10, method 10, version 0-9, the server properties (a
        // table of long strings), mechanisms, locales; the frame end 0xCE.
        fn long(out: &mut Vec<u8>, s: &str) {
            out.extend((s.len() as u32).to_be_bytes());
            out.extend(s.as_bytes());
        }
        let mut table = Vec::new();
        for (k, v) in [("product", "RabbitMQ"), ("version", "4.0.5")] {
            table.push(k.len() as u8);
            table.extend(k.as_bytes());
            table.push(b'S');
            long(&mut table, v);
        }
        let mut payload = vec![0, 10, 0, 10, 0, 9];
        payload.extend((table.len() as u32).to_be_bytes());
        payload.extend(table);
        long(&mut payload, "PLAIN AMQPLAIN");
        long(&mut payload, "en_US");
        let mut bytes = vec![1, 0, 0];
        bytes.extend((payload.len() as u32).to_be_bytes());
        bytes.extend(payload);
        bytes.push(0xCE);
        assert_eq!(server_version(&bytes), Ok(Some(("RabbitMQ".into(), "4.0.5".into()))));
        assert_eq!(server_version(&bytes[..bytes.len() - 3]), Ok(None), "incomplete");
        assert_eq!(server_version(&[]), Ok(None));
        assert!(server_version(b"HTTP/1.1 400 Bad Request\r\n\r\n").is_err());
    }
}
