//! Waiting until the mock has kicked every expected pair, without disturbing the run: the cheap call counter
//! is polled, and the (costly) kick log is read only once calls have paused at or above the minimum.

use super::error::BenchError;
use super::workload::Pair;
use crate::mock_zego::MockZego;
use std::collections::HashSet;
use std::time::Duration;
use tokio::time::Instant;

/// How often the call counter is read.
const POLL: Duration = Duration::from_millis(100);

/// The distinct (room, user) pairs the mock has kicked so far.
pub fn kicked_pairs(mock: &MockZego) -> HashSet<Pair> {
    mock.kicked().into_iter().map(|k| (k.room_id, k.user_id)).collect()
}

/// How long the calls must stay still, once every pair is kicked, before the
/// run counts as drained.
const QUIET: Duration = Duration::from_secs(1);

/// Waits until every pair of `expected` was kicked and the calls have been
/// quiet for [`QUIET`]. `min_calls` is a lower bound on the calls that takes
/// (the log is not read before); `stall` is how long the call count may stand
/// still before the run counts as stuck.
pub async fn until_kicked(
    mock: &MockZego,
    expected: &HashSet<Pair>,
    min_calls: u64,
    stall: Duration,
) -> Result<(), BenchError> {
    let mut last = u64::MAX;
    let mut checked_at = u64::MAX;
    let mut changed = Instant::now();
    let mut done_at: Option<u64> = None;
    loop {
        tokio::time::sleep(POLL).await;
        let calls = mock.counters().calls;
        if calls != last {
            last = calls;
            changed = Instant::now();
            continue;
        }
        if calls >= min_calls && checked_at != calls {
            checked_at = calls;
            let kicked = kicked_pairs(mock);
            if expected.iter().all(|p| kicked.contains(p)) {
                done_at.get_or_insert(calls);
            }
        }
        // Every pair kicked is not yet every message done: a message whose
        // users an earlier message already covered still makes its own call.
        // Stop only once the calls have also been quiet for a while.
        if done_at.is_some() && changed.elapsed() >= QUIET {
            return Ok(());
        }
        if changed.elapsed() > stall {
            let kicked = kicked_pairs(mock);
            let missing = expected.iter().filter(|p| !kicked.contains(*p)).count();
            return Err(BenchError::Stalled(format!(
                "no API call for {stall:?}; {missing} of {} pairs never kicked after {calls} calls",
                expected.len()
            )));
        }
    }
}
