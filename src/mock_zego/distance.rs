//! The mock's distance from its caller: a one-way delay with jitter on each leg, so a gateway far away can be
//! played on loopback. The request's leg is waited before the rate window counts it (the gateway counts
//! arrivals), the answer's leg after it.

use std::time::Duration;

/// How far the mock plays the gateway: each leg (request, answer) takes
/// `one_way` plus a jitter drawn uniformly from `[-jitter, +jitter]`,
/// independently per leg and per call. The default is loopback (no delay).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Distance {
    /// The mean one-way delay.
    pub one_way: Duration,
    /// The most a leg differs from `one_way`, either way (at most `one_way`).
    pub jitter: Duration,
}

/// A [`Distance`] whose jitter exceeds its delay (a leg would be negative).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jitter {jitter_ms} ms exceeds the one-way delay {one_way_ms} ms: a leg cannot take less than no time")]
pub struct JitterTooLarge {
    /// The one-way delay asked for.
    pub one_way_ms: u64,
    /// The jitter asked for.
    pub jitter_ms: u64,
}

impl Distance {
    /// A distance of `one_way_ms` ± `jitter_ms` per leg.
    pub fn new(one_way_ms: u64, jitter_ms: u64) -> Result<Self, JitterTooLarge> {
        if jitter_ms > one_way_ms {
            return Err(JitterTooLarge { one_way_ms, jitter_ms });
        }
        Ok(Self {
            one_way: Duration::from_millis(one_way_ms),
            jitter: Duration::from_millis(jitter_ms),
        })
    }

    /// Whether the mock answers on loopback time (no delay at all).
    pub fn is_zero(&self) -> bool {
        self.one_way.is_zero()
    }

    /// One leg's delay for a uniform draw `u` in `[0, 1)`.
    pub fn leg(&self, u: f64) -> Duration {
        let offset = self.jitter.as_secs_f64() * (2.0 * u.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((self.one_way.as_secs_f64() + offset).max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legs_stay_within_the_jitter_by_table() {
        let d = Distance::new(100, 20).unwrap();
        let ms = |u: f64| d.leg(u).as_secs_f64() * 1000.0;
        for (u, want) in [
            (0.0, 80.0),
            (0.5, 100.0),
            (0.999_999, 120.0),
            (1.0, 120.0),
            (-3.0, 80.0),
        ] {
            assert!((ms(u) - want).abs() < 0.01, "u {u}: {} ms, want {want}", ms(u));
        }
        assert_eq!(Distance::default().leg(0.7), Duration::ZERO);
        assert!(Distance::default().is_zero());
        assert_eq!(
            Distance::new(10, 11),
            Err(JitterTooLarge {
                one_way_ms: 10,
                jitter_ms: 11
            })
        );
    }
}
