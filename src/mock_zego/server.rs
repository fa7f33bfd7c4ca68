//! The mock's HTTP surface: the API route, the `/_mock/*` control routes, and the serve loop with graceful shutdown.

use super::config::{DuplicateAppId, MockConfig};
use super::conn::{ConnHandle, KillableListener};
use super::engine::{Engine, HttpReply};
use super::faults::FaultRule;
use super::state::{CallLog, Counters};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// State shared by the handlers and the [`super::MockZego`] handle.
pub(crate) struct Shared {
    engine: Mutex<Engine>,
    /// Origin of the monotonic arrival times.
    pub(crate) started: Instant,
    /// Cancelled when the server shuts down; releases hanging calls.
    pub(crate) shutdown: CancellationToken,
    /// The legs each call waits (see [`super::Distance`]).
    distance: Mutex<super::distance::Distance>,
}

impl Shared {
    pub(crate) fn new(cfg: &MockConfig) -> Result<Self, DuplicateAppId> {
        Ok(Self {
            engine: Mutex::new(Engine::new(cfg)?),
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            distance: Mutex::new(cfg.distance),
        })
    }

    /// The distance calls travel from now on.
    pub(crate) fn set_distance(&self, d: super::distance::Distance) {
        *self.distance.lock().unwrap_or_else(PoisonError::into_inner) = d;
    }

    fn distance(&self) -> super::distance::Distance {
        *self.distance.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The engine. A panic while it was held can only come from a bug in a
    /// test assertion path; the data stays usable, so poisoning is ignored.
    pub(crate) fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Serves until `shutdown` resolves or `shared.shutdown` is cancelled, then
/// releases hanging calls and waits for open connections to finish.
pub(crate) async fn run(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let token = shared.shutdown.clone();
    let signal = async move {
        tokio::select! {
            () = shutdown => {}
            () = token.cancelled() => {}
        }
        token.cancel();
    };
    let app = Router::new()
        .route("/", get(api).post(api))
        .route("/_mock/state", get(state))
        .route("/_mock/calls", get(calls))
        .route("/_mock/faults", post(faults))
        .route("/_mock/reset", post(reset))
        .with_state(shared);
    axum::serve(
        KillableListener(listener),
        app.into_make_service_with_connect_info::<ConnHandle>(),
    )
    .with_graceful_shutdown(signal)
    .await
}

fn system_unix() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

async fn api(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnHandle>,
    RawQuery(query): RawQuery,
) -> Response {
    // The request's leg: the gateway counts it when it arrives.
    let distance = shared.distance();
    let (out, back) = (distance.leg(rand::random()), distance.leg(rand::random()));
    if !out.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(out) => {}
            () = shared.shutdown.cancelled() => return drop_connection(&conn),
        }
    }
    let reply = {
        let mut engine = shared.engine();
        // Read the clock under the lock so arrival times are recorded in order.
        let now = shared.started.elapsed();
        engine.handle(
            query.as_deref().unwrap_or(""),
            now,
            system_unix(),
            &mut rand::random::<f64>,
        )
    };
    // Fault latency, then the answer's leg.
    let wait = reply.latency + back;
    if !wait.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.shutdown.cancelled() => return drop_connection(&conn),
        }
    }
    match reply.outcome {
        HttpReply::Json { code, request_id } => Json(serde_json::json!({
            "Code": code,
            "Message": crate::zego::describe(code),
            "RequestId": request_id,
        }))
        .into_response(),
        HttpReply::Http500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Html("<html><head><title>500 Internal Server Error</title></head><body><h1>500 Internal Server Error</h1></body></html>"),
        )
            .into_response(),
        HttpReply::Hang => {
            shared.shutdown.cancelled().await;
            drop_connection(&conn)
        }
        HttpReply::Reset => drop_connection(&conn),
    }
}

/// Kills the connection; the returned response is never written.
fn drop_connection(conn: &ConnHandle) -> Response {
    conn.kill();
    StatusCode::NO_CONTENT.into_response()
}

async fn state(State(shared): State<Arc<Shared>>) -> Json<Counters> {
    Json(shared.engine().counters())
}

async fn calls(State(shared): State<Arc<Shared>>) -> Json<CallLog> {
    Json(shared.engine().log().clone())
}

async fn faults(State(shared): State<Arc<Shared>>, Json(rules): Json<Vec<FaultRule>>) -> Response {
    if let Some(why) = rules.iter().find_map(|r| r.validate().err()) {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    shared.engine().set_faults(rules);
    StatusCode::NO_CONTENT.into_response()
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.engine().reset();
    StatusCode::NO_CONTENT
}
