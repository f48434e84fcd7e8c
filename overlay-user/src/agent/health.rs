//! What the agent keeps for the health summary of `overlayctl status`:
//! the drop counters sampled every few seconds (so that status can say how
//! many drops the last minute saw), and the Docker connection as the
//! Docker source last reported it.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use crate::model::status::{Connection, Health};

/// The window "drops in the last minute" covers.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Samples are taken at most this often.
pub const EVERY: Duration = Duration::from_secs(5);

/// Drop counters over time and the Docker connection.
#[derive(Debug, Default)]
pub struct HealthState {
    /// (when, drops by reason), oldest first; the oldest is at least
    /// [`WINDOW`] old once overlayd has run that long.
    samples: VecDeque<(Instant, BTreeMap<String, u64>)>,
    docker: Option<Connection>,
}

impl HealthState {
    /// Record the drop counters read at `now` (at most every [`EVERY`]);
    /// samples older than needed for the window are let go.
    pub fn sample(&mut self, now: Instant, drops: &BTreeMap<String, u64>) {
        if self
            .samples
            .back()
            .is_some_and(|(t, _)| now.duration_since(*t) < EVERY)
        {
            return;
        }
        self.samples.push_back((now, drops.clone()));
        // Keep one sample at least WINDOW old, and none older than that.
        while self.samples.len() > 1 && now.duration_since(self.samples[1].0) >= WINDOW {
            self.samples.pop_front();
        }
    }

    /// The Docker source's report: connected (to what) or not (why).
    pub fn set_docker(&mut self, connection: Connection) {
        self.docker = Some(connection);
    }

    /// The summary at `now` for counters `drops` read now; `docker_enabled`
    /// says whether a Docker state is expected.
    pub fn summary(
        &self,
        now: Instant,
        drops: &BTreeMap<String, u64>,
        docker_enabled: bool,
    ) -> Health {
        // The newest sample at least WINDOW old, else the oldest there is.
        let base = self
            .samples
            .iter()
            .rev()
            .find(|(t, _)| now.duration_since(*t) >= WINDOW)
            .or_else(|| self.samples.front());
        let (window, by_reason) = match base {
            Some((t, old)) => {
                let by_reason: BTreeMap<String, u64> = drops
                    .iter()
                    .map(|(k, v)| (k.clone(), v.saturating_sub(*old.get(k).unwrap_or(&0))))
                    .filter(|(_, v)| *v > 0)
                    .collect();
                (now.duration_since(*t).min(WINDOW), by_reason)
            }
            None => (Duration::ZERO, BTreeMap::new()),
        };
        let docker = match (&self.docker, docker_enabled) {
            (_, false) => None,
            (Some(c), true) => Some(c.clone()),
            (None, true) => Some(Connection {
                connected: false,
                detail: "connecting".into(),
            }),
        };
        Health {
            programs: Vec::new(),
            docker,
            drops_recent: by_reason.values().sum(),
            drops_recent_by_reason: by_reason,
            drops_window_secs: window.as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drops(n: u64) -> BTreeMap<String, u64> {
        BTreeMap::from([("unknown_vni".to_string(), n), ("bad_vni".to_string(), 0)])
    }

    #[test]
    fn drops_in_the_last_minute() {
        let t0 = Instant::now();
        let mut h = HealthState::default();
        h.sample(t0, &drops(10));
        let s = h.summary(t0 + Duration::from_secs(3), &drops(15), false);
        assert_eq!((s.drops_recent, s.drops_window_secs), (5, 3));
        assert_eq!(
            s.drops_recent_by_reason,
            BTreeMap::from([("unknown_vni".into(), 5)])
        );
        // A sample a second later is skipped (every 5 s at most).
        h.sample(t0 + Duration::from_secs(1), &drops(11));
        assert_eq!(h.samples.len(), 1);
        for i in 1..=30u64 {
            h.sample(t0 + Duration::from_secs(5 * i), &drops(10 + 100 * i));
        }
        // At 150 s: the base is the newest sample at least 60 s old (90 s: 1810).
        let now = t0 + Duration::from_secs(150);
        let s = h.summary(now, &drops(3010), false);
        assert_eq!((s.drops_recent, s.drops_window_secs), (1200, 60));
        assert!(h.samples.len() <= 14, "{}", h.samples.len());
        assert_eq!(s.docker, None);
        assert_eq!(
            h.summary(now, &drops(3010), true).docker.map(|d| d.detail),
            Some("connecting".into())
        );
    }
}
