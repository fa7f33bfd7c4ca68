//! One signed client per AppId, so a worker that serves several apps calls each with its own secret and host.

use crate::zego::client::ZegoClient;
use std::collections::HashMap;

/// The clients of every app a worker serves, by AppId.
#[derive(Debug, Clone, Default)]
pub struct Clients {
    by_app: HashMap<u32, ZegoClient>,
}

impl Clients {
    /// Adds a client for its AppId (replacing any other for it).
    pub fn insert(&mut self, client: ZegoClient) {
        self.by_app.insert(client.app_id(), client);
    }

    /// The client of an AppId.
    pub fn get(&self, app_id: u32) -> Option<&ZegoClient> {
        self.by_app.get(&app_id)
    }

    /// AppIds served.
    pub fn app_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.by_app.keys().copied()
    }

    /// Opens connections to every app's gateway ahead of the first call, in
    /// the background, and logs what each got ([`ZegoClient::warm_up`]).
    pub fn warm_up_in_background(&self) {
        for client in self.by_app.values() {
            let client = client.clone();
            tokio::spawn(async move {
                let w = client.warm_up(crate::zego::client::WARM_CONNECTIONS).await;
                let took_ms = u64::try_from(w.took.as_millis()).unwrap_or(u64::MAX);
                match w.http {
                    Some(http) => tracing::info!(
                        app_id = client.app_id(),
                        answered = w.answered,
                        http = %http,
                        took_ms,
                        "API connections opened ahead of the first call"
                    ),
                    None => tracing::warn!(
                        app_id = client.app_id(),
                        took_ms,
                        "could not open an API connection ahead of the first call; calls will open their own"
                    ),
                }
            });
        }
    }
}
