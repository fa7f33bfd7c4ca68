//! The HTTP intake's own broker connection: a `Producer` opened on the first request and again after a failure,
//! publishing each batch with confirms.

use crate::amqp::topology::Lane;
use crate::job::KickRequest;
use crate::producer::{Producer, ProducerConfig, ProducerError};
use crate::secret::Secret;
use std::sync::Arc;
use std::time::Duration;

/// Longest a request waits for a (re)connection before it is answered 503:
/// a client retries sooner than a dead broker answers a TCP connect.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a batch was not published (503).
#[derive(Debug, thiserror::Error)]
pub(crate) enum Unavailable {
    /// Connecting timed out.
    #[error("the broker did not answer within {0:?}")]
    Timeout(Duration),
    /// Connecting, declaring, publishing or a confirm failed.
    #[error(transparent)]
    Producer(#[from] ProducerError),
}

/// Opens its connection on demand: a request after a broker failure tries again.
pub(crate) struct IntakePublisher {
    url: Secret,
    cfg: ProducerConfig,
    current: tokio::sync::Mutex<Option<Arc<Producer>>>,
}

impl IntakePublisher {
    pub(crate) fn new(url: Secret, cfg: ProducerConfig) -> IntakePublisher {
        IntakePublisher {
            url,
            cfg,
            current: tokio::sync::Mutex::new(None),
        }
    }

    async fn producer(&self) -> Result<Arc<Producer>, Unavailable> {
        let mut current = self.current.lock().await;
        if let Some(p) = current.as_ref().filter(|p| p.is_connected()) {
            return Ok(p.clone());
        }
        *current = None;
        let p = tokio::time::timeout(CONNECT_TIMEOUT, Producer::connect_with(&self.url, self.cfg.clone()))
            .await
            .map_err(|_| Unavailable::Timeout(CONNECT_TIMEOUT))??;
        let p = Arc::new(p);
        *current = Some(p.clone());
        Ok(p)
    }

    /// Publishes `jobs` (validated) to `lane` and returns their ids once every
    /// one is confirmed. On a failure the connection is dropped, for the next
    /// request to open a new one.
    pub(crate) async fn publish(&self, lane: Lane, jobs: Vec<KickRequest>) -> Result<Vec<String>, Unavailable> {
        let producer = self.producer().await?;
        match producer.enqueue_many_to(lane, jobs).await {
            Ok(ids) => Ok(ids),
            Err(e) => {
                let mut current = self.current.lock().await;
                if current.as_ref().is_some_and(|p| Arc::ptr_eq(p, &producer)) {
                    *current = None;
                }
                Err(e.into())
            }
        }
    }
}
