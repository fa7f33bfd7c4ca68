//! Serving kickq's HTTP listeners (metrics and health, the HTTP intake, the console) with bounds that
//! `axum::serve` does not set: a header-read timeout that is also the idle timeout, a body timeout, a cap on
//! open connections, and the client's address for the handlers (`ConnectInfo<SocketAddr>`).
//!
//! Hand-written around hyper's HTTP/1 connection builder, since axum's
//! `serve` exposes none of these settings; hyper-util's graceful shutdown
//! lets every open connection finish its request when the listener stops.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// How long a client may take to send a request's headers, counted from
/// the end of its previous request (so it is also how long an idle
/// keep-alive connection stays open): hyper's own default, long enough that
/// a client's pooled connection is rarely closed under it between two
/// requests, short enough that a slowloris client holds a connection half
/// a minute, not minutes; the per-client cap keeps one such client from
/// holding the listener.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to send a request's whole body once its
/// headers are in (one deadline for the body, not a wait between chunks, so
/// a client dripping a byte at a time is cut off too): an intake batch of
/// the largest allowed size (1 MiB by default) takes well under a second on
/// any working link.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Most connections one listener keeps open at once; past it a new
/// connection is closed at once, before anything is read. Far above what
/// producers, a browser and a scraper open, far below the process's file
/// descriptor limit (1024 by default).
pub(crate) const MAX_CONNECTIONS: usize = 256;

/// Most connections one client address keeps open on a listener: a
/// browser opens 6 per host, a producer's pool a few dozen at most; one
/// address cannot take the whole listener.
pub(crate) const MAX_CONNECTIONS_PER_CLIENT: usize = 64;

/// A listener's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// See [`HEADER_READ_TIMEOUT`].
    pub header_read: Duration,
    /// See [`BODY_TIMEOUT`].
    pub body: Duration,
    /// See [`MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// See [`MAX_CONNECTIONS_PER_CLIENT`].
    pub max_per_client: usize,
}

impl Default for Bounds {
    fn default() -> Self {
        Bounds {
            header_read: HEADER_READ_TIMEOUT,
            body: BODY_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
            max_per_client: MAX_CONNECTIONS_PER_CLIENT,
        }
    }
}

/// Serves `app` on `listener` within `bounds` until `shutdown` completes,
/// then lets the open connections finish their requests. `name` names the
/// listener in the log (`console`, `http intake`, `metrics`).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    bounds: Bounds,
    name: &'static str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let per_client = PerClient::default();
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_read)
        .keep_alive(true);
    tokio::pin!(shutdown);
    let mut refused_since_log = 0u64;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, mostly: wait, do not spin.
                    tracing::warn!(listener = name, error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let slot = slots.clone().try_acquire_owned().ok();
        let client_slot = slot
            .as_ref()
            .and_then(|_| per_client.take(counted_as(peer.ip()), bounds.max_per_client));
        let (Some(slot), Some(client_slot)) = (slot, client_slot) else {
            refused_since_log += 1;
            if refused_since_log == 1 || refused_since_log.is_power_of_two() {
                tracing::warn!(
                    listener = name,
                    client = %peer,
                    refused = refused_since_log,
                    max_connections = bounds.max_connections,
                    max_per_client = bounds.max_per_client,
                    "connection refused: the listener, or this client address, holds its most open connections"
                );
            }
            drop(stream);
            continue;
        };
        refused_since_log = 0;
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let req = req.map(|body| axum::body::Body::new(DeadlineBody::new(body, bounds.body)));
            let mut app = app.clone();
            tower_service::Service::call(&mut app, req)
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(listener = name, client = %peer, error = %e, "connection ended");
            }
            drop((slot, client_slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// A request body that fails with [`BodyTimeout`] once its deadline, set
/// when the request's headers were read, has passed: a deadline for the
/// whole body (tower-http's body timeout waits per chunk, which a client
/// dripping bytes never trips).
struct DeadlineBody<B> {
    inner: B,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
    within: Duration,
}

impl<B> DeadlineBody<B> {
    fn new(inner: B, within: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
            within,
        }
    }
}

/// The body did not arrive within the listener's body timeout.
#[derive(Debug, thiserror::Error)]
#[error("the body did not arrive within {0:?} of the headers")]
pub(crate) struct BodyTimeout(pub Duration);

impl<B> http_body::Body for DeadlineBody<B>
where
    B: http_body::Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let std::task::Poll::Ready(frame) = std::pin::Pin::new(&mut this.inner).poll_frame(cx) {
            return std::task::Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        match this.deadline.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Some(Err(Box::new(BodyTimeout(this.within))))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// A client address as per-client bounds count it: an IPv6 address by its
/// /64 (one host or site usually holds a whole /64, so counting each
/// address alone would let it pass any per-client bound), an IPv4-mapped
/// one as the IPv4 address, an IPv4 address as itself.
pub(crate) fn counted_as(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => std::net::IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                std::net::IpAddr::V6(std::net::Ipv6Addr::from(prefix))
            }
        },
        v4 => v4,
    }
}

/// Open connections per client address.
#[derive(Debug, Default, Clone)]
struct PerClient(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// One open connection of a client address, given back when dropped.
struct ClientSlot(PerClient, std::net::IpAddr);

impl PerClient {
    /// A slot for `ip`, unless it holds `max` already.
    fn take(&self, ip: std::net::IpAddr, max: usize) -> Option<ClientSlot> {
        let mut open = self.0.lock().expect("no panic holds the connection count");
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot(self.clone(), ip))
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = (self.0).0.lock().expect("no panic holds the connection count");
        if let Some(n) = open.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.1);
            }
        }
    }
}

/// The client's address, for log lines and per-client throttling: what
/// [`serve`] recorded for the connection (`None` when a handler runs
/// without it, as in a test that calls the router directly).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client(pub Option<std::net::SocketAddr>);

impl Client {
    /// The client's address as the throttle and the caps count it, if
    /// known: [`counted_as`].
    pub(crate) fn ip(&self) -> Option<std::net::IpAddr> {
        self.0.map(|a| counted_as(a.ip()))
    }

    /// The client of a request's parts.
    pub(crate) fn of(parts: &axum::http::request::Parts) -> Client {
        Client(parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0))
    }
}

impl std::fmt::Display for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(a) => write!(f, "{a}"),
            None => f.write_str("unknown"),
        }
    }
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(Client::of(parts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_counted_by_table() {
        let cases = [
            ("192.0.2.7", "192.0.2.7"),
            ("::ffff:192.0.2.7", "192.0.2.7"),
            ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::"),
            ("2001:db8:1:2::1", "2001:db8:1:2::"),
            ("2001:db8:1:3::1", "2001:db8:1:3::"),
        ];
        for (ip, counted) in cases {
            assert_eq!(
                counted_as(ip.parse().unwrap()),
                counted.parse::<std::net::IpAddr>().unwrap(),
                "{ip}"
            );
        }
    }
}
