//! Hybrid logical clocks: timestamps that follow wall time but never go backwards and order
//! every event a node has seen after the events that caused it.

use serde::{Deserialize, Serialize};
use weft_core::NodeId;

/// A totally ordered timestamp: wall milliseconds, a logical counter, and the node as tiebreak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Timestamp {
    /// Wall-clock milliseconds (the largest seen).
    pub wall: u64,
    /// Events within the same millisecond.
    pub logical: u32,
    /// The node that made it.
    pub node: NodeId,
}

/// A node's clock.
#[derive(Debug)]
pub struct Hlc {
    last: Timestamp,
}

/// Timestamps further than this ahead of local wall time are refused (a peer's broken clock
/// must not drag every later write into the future).
pub const MAX_DRIFT_MS: u64 = 60_000;

impl Hlc {
    /// A clock for `node`.
    pub fn new(node: NodeId) -> Hlc {
        Hlc {
            last: Timestamp {
                wall: 0,
                logical: 0,
                node,
            },
        }
    }

    /// A timestamp for a local event at wall time `now`.
    pub fn now(&mut self, now: u64) -> Timestamp {
        if now > self.last.wall {
            self.last.wall = now;
            self.last.logical = 0;
        } else {
            self.last.logical = self.last.logical.saturating_add(1);
        }
        self.last
    }

    /// Account for a timestamp received from elsewhere. Refuses ones too far in the future.
    pub fn observe(&mut self, seen: Timestamp, now: u64) -> Result<(), u64> {
        if seen.wall > now.saturating_add(MAX_DRIFT_MS) {
            return Err(seen.wall - now);
        }
        if seen.wall > self.last.wall
            || (seen.wall == self.last.wall && seen.logical > self.last.logical)
        {
            self.last.wall = seen.wall;
            self.last.logical = seen.logical;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_monotonic_and_causal() {
        let mut a = Hlc::new(NodeId([1; 32]));
        let mut b = Hlc::new(NodeId([2; 32]));
        let t1 = a.now(100);
        let t2 = a.now(90); // the wall clock stepped back
        assert!(t2 > t1);
        b.observe(t2, 50).unwrap();
        let t3 = b.now(50); // b's wall clock is behind, but its event follows what it saw
        assert!(t3 > t2);
        assert!(
            b.observe(
                Timestamp {
                    wall: 10_000_000,
                    logical: 0,
                    node: NodeId([3; 32])
                },
                0
            )
            .is_err()
        );
    }
}
