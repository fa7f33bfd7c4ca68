//! The strict stand-in for ZEGOCLOUD's KickoutUser API: configuration, the in-process handle for tests, and `serve` for `kickq mock-zego`.
//!
//! It answers what the vendor documents, in the vendor's order: common
//! parameters and signature, the per-AppId rate limit (a strict sliding
//! second), the call's own parameters (ids in the vendor's documented
//! character set unless configured otherwise), then scripted faults and room
//! state. It serves one AppId or several, each with its own ServerSecret and
//! its own sliding second; a request for any other AppId answers 100000010.
//! Control routes: `GET /_mock/state` (counters), `GET /_mock/calls` (calls
//! and kicks), `POST /_mock/faults` (replace the rules, JSON array of
//! [`FaultRule`]), `POST /_mock/reset`.

mod config;
mod conn;
pub mod distance;
mod engine;
pub mod fault_syntax;
pub mod faults;
mod server;
pub mod state;
pub mod verify;
mod window;

pub use config::{DuplicateAppId, MockApp, MockConfig, UnknownAppId};
pub use distance::{Distance, JitterTooLarge};
pub use fault_syntax::{parse_fault, FaultSyntaxError};
pub use faults::{glob, FaultEffect, FaultRule};
pub use state::{AppCounters, CallLog, CallRecord, Counters, Kicked};

use crate::job::IdCharset;
use crate::secret::Secret;
use server::Shared;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

/// A running mock. The server stops when [`MockZego::shutdown`] is awaited,
/// or in the background when the handle is dropped.
///
/// It serves on a thread and runtime of its own: the arrival times it counts
/// the rate limit by are then not delayed by whatever else the embedding
/// process does (a test polling the mock, a bench worker), which on a busy
/// runtime blurred them by tens of milliseconds and made a strict 50-per-
/// second client look like 51.
pub struct MockZego {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// How the server ended; `None` only after `shutdown` took it.
    ended: Option<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
}

impl MockZego {
    /// Binds `addr` (port 0 picks a free port) and serves on a thread of its
    /// own. A config naming an AppId twice is an `InvalidInput` error
    /// wrapping [`DuplicateAppId`].
    pub async fn start(cfg: MockConfig, addr: SocketAddr) -> std::io::Result<MockZego> {
        let shared = Arc::new(Shared::new(&cfg).map_err(invalid_input)?);
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (done, ended) = tokio::sync::oneshot::channel();
        let server = shared.clone();
        std::thread::Builder::new().name("mock-zego".into()).spawn(move || {
            let result = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async move {
                        let listener = TcpListener::from_std(listener)?;
                        let token = server.shutdown.clone();
                        server::run(server, listener, token.cancelled_owned()).await
                    })
                });
            let _ = done.send(result);
        })?;
        Ok(MockZego {
            shared,
            addr,
            ended: Some(ended),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The instant arrival times count from: a call's `at_us` is
    /// microseconds after it, on this process's monotonic clock.
    pub fn started(&self) -> std::time::Instant {
        self.shared.started
    }

    /// `http://` plus the bound address, e.g. `http://127.0.0.1:40123`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the fault rules and restarts their match counts.
    pub fn set_faults(&self, rules: Vec<FaultRule>) {
        self.shared.engine().set_faults(rules);
    }

    /// Replaces the primary AppId's ServerSecret ([`MockConfig::secret`]).
    pub fn set_secret(&self, s: Secret) {
        self.shared.engine().set_secret(s);
    }

    /// Replaces the ServerSecret of `app_id`, one of the AppIds served.
    pub fn set_app_secret(&self, app_id: u32, s: Secret) -> Result<(), UnknownAppId> {
        self.shared.engine().set_app_secret(app_id, s)
    }

    /// Sets the offset added to the system clock for the timestamp check.
    pub fn set_clock_offset(&self, secs: i64) {
        self.shared.engine().set_clock_offset(secs);
    }

    /// Sets the requests allowed per AppId per sliding second; 0 is unlimited.
    pub fn set_rate_limit(&self, per_sec: u32) {
        self.shared.engine().set_rate_limit(per_sec);
    }

    /// Sets how far the mock plays the gateway, for calls from now on.
    pub fn set_distance(&self, distance: Distance) {
        self.shared.set_distance(distance);
    }

    /// Sets which characters room and user ids may hold.
    pub fn set_id_charset(&self, charset: IdCharset) {
        self.shared.engine().set_id_charset(charset);
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.engine().counters()
    }

    /// Every call so far, in the order decided.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.shared.engine().log().calls.clone()
    }

    /// Every kicked user so far, in order.
    pub fn kicked(&self) -> Vec<Kicked> {
        self.shared.engine().log().kicked.clone()
    }

    /// Forgets calls, kicks, counters, the rate window and fault match counts.
    pub fn reset(&self) {
        self.shared.engine().reset();
    }

    /// Stops accepting, releases hanging calls, and waits for the server to end.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(ended) = self.ended.take() {
            match ended.await {
                Ok(Ok(())) => {}
                Ok(Err(err)) => {
                    tracing::warn!(error = %err, "mock-zego server ended with an error")
                }
                Err(_) => tracing::warn!("mock-zego server thread ended without a word"),
            }
        }
    }
}

impl Drop for MockZego {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// Serves the mock on `listener` until `shutdown` resolves, then stops
/// gracefully (hanging calls are released). A config naming an AppId twice
/// is an `InvalidInput` error wrapping [`DuplicateAppId`].
pub async fn serve(
    cfg: MockConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let shared = Shared::new(&cfg).map_err(invalid_input)?;
    server::run(Arc::new(shared), listener, shutdown).await
}

fn invalid_input(err: DuplicateAppId) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidInput, err)
}
