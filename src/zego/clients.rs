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
}
