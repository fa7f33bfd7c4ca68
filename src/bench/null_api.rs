//! An in-process [`KickApi`] that answers 0 at once without HTTP and records what it was asked: the drain
//! scenario runs kickq on it to separate the pipeline's own cost from the HTTP round trips to the mock.

use super::workload::Pair;
use crate::pipeline::dispatch::KickApi;
use crate::zego::client::{ApiReply, CallResult};
use std::collections::HashSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Answers every call with code 0 and remembers the pairs and the last call's instant.
#[derive(Debug, Default)]
pub struct NullApi {
    calls: AtomicU64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    pairs: HashSet<Pair>,
    last: Option<Instant>,
}

impl NullApi {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Distinct pairs kicked so far.
    pub fn kicked_count(&self) -> usize {
        self.state().pairs.len()
    }

    /// The distinct pairs kicked.
    pub fn kicked(&self) -> HashSet<Pair> {
        self.state().pairs.clone()
    }

    /// When the last call was made.
    pub fn last_call(&self) -> Option<Instant> {
        self.state().last
    }
}

impl KickApi for NullApi {
    fn kickout(
        &self,
        _app_id: u32,
        room_id: &str,
        user_ids: &[String],
        _reason: Option<&str>,
    ) -> impl Future<Output = CallResult> + Send {
        let n = self.calls.fetch_add(1, Ordering::Relaxed);
        {
            let mut s = self.state();
            s.pairs.extend(user_ids.iter().map(|u| (room_id.to_owned(), u.clone())));
            s.last = Some(Instant::now());
        }
        std::future::ready(CallResult {
            result: Ok(ApiReply {
                code: 0,
                message: "success".into(),
                request_id: format!("null-{n}"),
                http_status: 200,
            }),
            started_at: chrono::Utc::now(),
            latency: Duration::ZERO,
        })
    }
}
