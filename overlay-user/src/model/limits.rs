//! Limits that protect overlayd from what it serves: the `[api]` section
//! (idle timeout, connection cap) and `learn_limit` (endpoints the
//! from-container program may learn on one port), with their validation.

use std::time::Duration;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::model::validation::InputError;

/// Default of `api.idle_timeout_secs`.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 30;
/// Largest `api.idle_timeout_secs` accepted (one hour).
pub const MAX_IDLE_TIMEOUT_SECS: u64 = 3600;
/// Default of `api.max_connections`.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 64;
/// Largest `api.max_connections` accepted.
pub const MAX_MAX_CONNECTIONS: u32 = 4096;

/// The `[api]` section: limits of the local API socket.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Seconds a connection may wait without sending a whole request line
    /// (or without reading an answer) before overlayd closes it.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_secs: u64,
    /// Connections served at once; a client beyond the cap gets one error
    /// line naming it and is disconnected.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            idle_timeout_secs: DEFAULT_IDLE_TIMEOUT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
        }
    }
}

fn default_idle_timeout() -> u64 {
    DEFAULT_IDLE_TIMEOUT_SECS
}

fn default_max_connections() -> u32 {
    DEFAULT_MAX_CONNECTIONS
}

impl ApiConfig {
    /// Check both limits.
    pub fn validate(&self) -> Result<(), InputError> {
        if !(1..=MAX_IDLE_TIMEOUT_SECS).contains(&self.idle_timeout_secs) {
            return Err(InputError::ApiLimit {
                field: "idle_timeout_secs",
                value: self.idle_timeout_secs,
                expected: "1..=3600 seconds (default 30)",
            });
        }
        if !(1..=MAX_MAX_CONNECTIONS).contains(&self.max_connections) {
            return Err(InputError::ApiLimit {
                field: "max_connections",
                value: u64::from(self.max_connections),
                expected: "1..=4096 connections (default 64)",
            });
        }
        Ok(())
    }

    /// The idle timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// Default of `learn_limit`.
pub fn default_learn_limit() -> u32 {
    overlay_common::DEFAULT_LEARN_LIMIT
}

/// How many container addresses `subnet` has (all but the network,
/// gateway and broadcast addresses).
pub fn container_addresses(subnet: Ipv4Net) -> u64 {
    (1u64 << (32 - u32::from(subnet.prefix_len()))).saturating_sub(3)
}

/// `learn_limit` may be 0 (no learning) up to the number of container
/// addresses of this host's subnet: more could never be learned.
pub fn check_learn_limit(value: u32, subnet: Ipv4Net) -> Result<(), InputError> {
    let max = container_addresses(subnet);
    if u64::from(value) > max {
        return Err(InputError::LearnLimit { value, max, subnet });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn learn_limit_is_bounded_by_the_subnet() {
        let s24 = net("10.103.100.0/24");
        assert_eq!(container_addresses(s24), 253);
        assert_eq!(container_addresses(net("10.103.100.0/30")), 1);
        assert_eq!(container_addresses(net("10.0.0.0/8")), 16_777_213);
        for ok in [0, 1, 4, 253] {
            check_learn_limit(ok, s24).unwrap();
        }
        assert_eq!(
            check_learn_limit(254, s24).unwrap_err().to_string(),
            "learn_limit = 254 is more than the 253 container addresses of subnet \
10.103.100.0/24; expected 0 (no learning) to 253"
        );
        assert_eq!(
            check_learn_limit(2, net("10.103.100.0/30"))
                .unwrap_err()
                .to_string(),
            "learn_limit = 2 is more than the 1 container addresses of subnet \
10.103.100.0/30; expected 0 (no learning) to 1"
        );
    }

    #[test]
    fn api_limits() {
        let d = ApiConfig::default();
        assert_eq!((d.idle_timeout_secs, d.max_connections), (30, 64));
        assert_eq!(d.idle_timeout(), Duration::from_secs(30));
        d.validate().unwrap();
        let bad = |idle, max| {
            ApiConfig {
                idle_timeout_secs: idle,
                max_connections: max,
            }
            .validate()
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            bad(0, 64),
            "api.idle_timeout_secs = 0 is out of range; expected 1..=3600 seconds (default 30)"
        );
        assert_eq!(
            bad(3601, 64),
            "api.idle_timeout_secs = 3601 is out of range; expected 1..=3600 seconds (default 30)"
        );
        assert_eq!(
            bad(30, 0),
            "api.max_connections = 0 is out of range; expected 1..=4096 connections (default 64)"
        );
        assert_eq!(
            bad(30, 5000),
            "api.max_connections = 5000 is out of range; expected 1..=4096 connections (default 64)"
        );
    }
}
