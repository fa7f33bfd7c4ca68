//! What the stand-in serves: `MockConfig` (its apps, each with its ServerSecret and rate), and its refusals.

use super::distance::Distance;
use super::faults::FaultRule;
use crate::job::IdCharset;
use crate::secret::Secret;
use std::collections::BTreeMap;

/// How the mock starts; every field but the AppIds can be changed while it runs.
#[derive(Clone, Debug)]
pub struct MockConfig {
    /// The primary AppId; with `apps`, the AppIds it knows. Any other answers
    /// 100000010.
    pub app_id: u32,
    /// That AppId's ServerSecret (`MockZego::set_secret` changes it).
    pub secret: Secret,
    /// More AppIds served beside the primary one, each with its own secret
    /// and its own rate window. Empty for the single-app mock. An AppId may
    /// appear once in `app_id` and `apps` together.
    pub apps: Vec<MockApp>,
    /// Authenticated requests allowed per AppId in any sliding second; more
    /// answer 206. Every AppId has a window of its own: one at its limit
    /// never makes another answer 206. 0 means unlimited.
    pub rate_limit: u32,
    /// Scripted faults, applied in order.
    pub faults: Vec<FaultRule>,
    /// Seconds added to the system clock for the 10-minute timestamp check.
    pub clock_offset_secs: i64,
    /// Which characters `RoomId` and `UserId[]` may hold; any other answers
    /// 2. [`IdCharset::Vendor`] is the vendor's documented set (the rule
    /// `kickq::job` validates with); [`IdCharset::Any`] lets tests send
    /// hostile ids (spaces, non-ASCII) through the query encoding.
    pub id_charset: IdCharset,
    /// How far the mock plays the gateway: each request waits one leg before
    /// the rate window counts it, each answer another. Loopback by default.
    pub distance: Distance,
}

/// One more AppId the mock serves, beside [`MockConfig::app_id`].
#[derive(Clone, Debug)]
pub struct MockApp {
    /// The AppId.
    pub app_id: u32,
    /// Its ServerSecret.
    pub secret: Secret,
}

/// A [`MockConfig`] that names one AppId twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("AppId {0} is configured twice")]
pub struct DuplicateAppId(pub u32);

/// [`MockZego::set_app_secret`] for an AppId the mock does not serve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the mock does not serve AppId {0}")]
pub struct UnknownAppId(pub u32);

impl MockConfig {
    /// Every AppId served and its secret, the primary one included.
    pub fn secrets(&self) -> Result<BTreeMap<u32, Secret>, DuplicateAppId> {
        let mut out = BTreeMap::new();
        let primary = std::iter::once((self.app_id, &self.secret));
        for (app_id, secret) in primary.chain(self.apps.iter().map(|a| (a.app_id, &a.secret))) {
            if out.insert(app_id, secret.clone()).is_some() {
                return Err(DuplicateAppId(app_id));
            }
        }
        Ok(out)
    }
}
