//! Vivaldi network coordinates, Serf's variant: a Euclidean part in several dimensions plus a
//! non-negative *height* (the access-link latency every path to the node pays), an error
//! estimate, and an adjustment term learned from recent residuals.
//!
//! Pure and deterministic given its inputs (the only randomness, a direction for coincident
//! coordinates, is derived from the peer's coordinate). Units are seconds, as in Serf.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Number of Euclidean dimensions.
pub const DIMENSIONS: usize = 8;
const ERROR_MAX: f64 = 1.5;
const CE: f64 = 0.25;
const CC: f64 = 0.25;
const ADJUSTMENT_WINDOW: usize = 20;
const HEIGHT_MIN: f64 = 10.0e-6;
const LATENCY_FILTER: usize = 3;
const GRAVITY_RHO: f64 = 150.0;
const ZERO: f64 = 1.0e-6;
/// Samples above this are absurd and rejected (seconds).
pub const MAX_RTT_SECS: f64 = 10.0;
/// Coordinates with any component this large are absurd and rejected (seconds).
const MAX_COMPONENT: f64 = 1.0e4;

/// A node's position in the latency space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    /// Euclidean part.
    pub vec: [f64; DIMENSIONS],
    /// Confidence: lower is better.
    pub error: f64,
    /// Residual correction.
    pub adjustment: f64,
    /// Access-link latency.
    pub height: f64,
}

impl Default for Coordinate {
    fn default() -> Self {
        Coordinate {
            vec: [0.0; DIMENSIONS],
            error: ERROR_MAX,
            adjustment: 0.0,
            height: HEIGHT_MIN,
        }
    }
}

impl Coordinate {
    /// True when every field is finite and within sane bounds (peers can send anything).
    pub fn is_valid(&self) -> bool {
        self.vec
            .iter()
            .all(|v| v.is_finite() && v.abs() < MAX_COMPONENT)
            && self.error.is_finite()
            && self.error >= 0.0
            && self.adjustment.is_finite()
            && self.adjustment.abs() < MAX_COMPONENT
            && self.height.is_finite()
            && (0.0..MAX_COMPONENT).contains(&self.height)
    }

    /// Estimated RTT to a node at `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        Duration::from_secs_f64(self.estimate_secs(other).clamp(0.0, MAX_RTT_SECS))
    }

    fn raw_distance(&self, other: &Coordinate) -> f64 {
        magnitude(&diff(&self.vec, &other.vec)) + self.height + other.height
    }

    fn estimate_secs(&self, other: &Coordinate) -> f64 {
        let dist = self.raw_distance(other);
        let adjusted = dist + self.adjustment + other.adjustment;
        if adjusted > 0.0 { adjusted } else { dist }
    }

    fn apply_force(&mut self, force: f64, other: &Coordinate) {
        let (unit, mag) = unit_vector_at(&self.vec, &other.vec);
        for (v, u) in self.vec.iter_mut().zip(unit.iter()) {
            *v += u * force;
        }
        if mag > ZERO {
            self.height =
                ((self.height + other.height) * force / mag + self.height).max(HEIGHT_MIN);
        }
    }
}

/// A sample was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SampleError {
    /// RTT not positive, not finite, or absurdly large.
    #[error("absurd rtt sample: {0:?}")]
    AbsurdRtt(Duration),
    /// The peer's coordinate has NaN, infinities or absurd values.
    #[error("invalid peer coordinate")]
    InvalidCoordinate,
}

/// The local node's coordinate and the state that refines it.
#[derive(Debug)]
pub struct Vivaldi<K> {
    coord: Coordinate,
    adjustment_samples: VecDeque<f64>,
    latency: HashMap<K, VecDeque<f64>>,
}

impl<K: Eq + Hash + Clone> Default for Vivaldi<K> {
    fn default() -> Self {
        Vivaldi {
            coord: Coordinate::default(),
            adjustment_samples: VecDeque::with_capacity(ADJUSTMENT_WINDOW),
            latency: HashMap::new(),
        }
    }
}

impl<K: Eq + Hash + Clone> Vivaldi<K> {
    /// The current coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// Forget a peer's latency filter (when it leaves).
    pub fn forget(&mut self, peer: &K) {
        self.latency.remove(peer);
    }

    /// Feed one RTT sample to `peer` whose coordinate is `other`.
    pub fn observe(
        &mut self,
        peer: &K,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<(), SampleError> {
        let secs = rtt.as_secs_f64();
        if !secs.is_finite() || secs <= 0.0 || secs > MAX_RTT_SECS {
            return Err(SampleError::AbsurdRtt(rtt));
        }
        if !other.is_valid() {
            return Err(SampleError::InvalidCoordinate);
        }
        let rtt = self.filtered(peer, secs);
        let before = self.coord.clone();
        self.update_vivaldi(other, rtt);
        self.update_adjustment(other, rtt);
        self.update_gravity();
        if !self.coord.is_valid() {
            // Numerical trouble must never poison the coordinate: start over.
            self.coord = before;
            self.coord.error = ERROR_MAX;
        }
        Ok(())
    }

    fn filtered(&mut self, peer: &K, secs: f64) -> f64 {
        let window = self.latency.entry(peer.clone()).or_default();
        if window.len() == LATENCY_FILTER {
            window.pop_front();
        }
        window.push_back(secs);
        let mut sorted: Vec<f64> = window.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64) {
        let dist = self.coord.raw_distance(other);
        let total_error = (self.coord.error + other.error).max(ZERO);
        let weight = self.coord.error / total_error;
        let wrongness = (dist - rtt).abs() / rtt;
        self.coord.error =
            (CE * weight * wrongness + self.coord.error * (1.0 - CE * weight)).min(ERROR_MAX);
        let force = CC * weight * (rtt - dist);
        self.coord.apply_force(force, other);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        if self.adjustment_samples.len() == ADJUSTMENT_WINDOW {
            self.adjustment_samples.pop_front();
        }
        self.adjustment_samples
            .push_back(rtt - self.coord.raw_distance(other));
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * ADJUSTMENT_WINDOW as f64);
    }

    fn update_gravity(&mut self) {
        let origin = Coordinate {
            vec: [0.0; DIMENSIONS],
            error: ERROR_MAX,
            adjustment: 0.0,
            height: HEIGHT_MIN,
        };
        let dist = self.coord.raw_distance(&origin);
        let force = -(dist / GRAVITY_RHO).powi(2);
        self.coord.apply_force(force, &origin);
    }
}

fn diff(a: &[f64; DIMENSIONS], b: &[f64; DIMENSIONS]) -> [f64; DIMENSIONS] {
    let mut out = [0.0; DIMENSIONS];
    for i in 0..DIMENSIONS {
        out[i] = a[i] - b[i];
    }
    out
}

fn magnitude(v: &[f64; DIMENSIONS]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Unit vector from `b` towards `a` and the distance; for coincident points, a direction derived
/// from the points themselves (Serf picks a random one; determinism keeps tests reproducible).
fn unit_vector_at(a: &[f64; DIMENSIONS], b: &[f64; DIMENSIONS]) -> ([f64; DIMENSIONS], f64) {
    let d = diff(a, b);
    let mag = magnitude(&d);
    if mag > ZERO {
        let mut unit = d;
        for x in &mut unit {
            *x /= mag;
        }
        return (unit, mag);
    }
    let mut seed = a
        .iter()
        .chain(b.iter())
        .fold(0x9e37_79b9_7f4a_7c15u64, |h, x| {
            (h ^ x.to_bits()).wrapping_mul(0x100_0000_01b3)
        });
    let mut unit = [0.0; DIMENSIONS];
    for x in &mut unit {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        *x = (seed as f64 / u64::MAX as f64) - 0.5;
    }
    let m = magnitude(&unit);
    if m > ZERO {
        for x in &mut unit {
            *x /= m;
        }
        (unit, 0.0)
    } else {
        let mut unit = [0.0; DIMENSIONS];
        unit[0] = 1.0;
        (unit, 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};

    /// Nodes in three "sites" whose true RTTs are site-to-site latencies plus small local ones.
    fn true_rtt(a: usize, b: usize) -> f64 {
        const SITE_RTT: [[f64; 3]; 3] = [
            [0.002, 0.160, 0.300],
            [0.160, 0.002, 0.240],
            [0.300, 0.240, 0.002],
        ];
        if a == b {
            return 0.0;
        }
        SITE_RTT[a % 3][b % 3] + 0.0005 * ((a + b) % 3) as f64
    }

    #[test]
    fn converges_to_low_error_on_a_three_site_fabric() {
        let n = 12;
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut nodes: Vec<Vivaldi<usize>> = (0..n).map(|_| Vivaldi::default()).collect();
        for _ in 0..400 {
            for i in 0..n {
                let j = (i + 1 + rng.random_range(0..n - 1)) % n;
                let noise = 1.0 + rng.random_range(-0.02..0.02);
                let other = nodes[j].coordinate().clone();
                let rtt = Duration::from_secs_f64(true_rtt(i, j) * noise);
                nodes[i].observe(&j, &other, rtt).unwrap();
            }
        }
        let mut errors = Vec::new();
        for i in 0..n {
            for j in 0..n {
                if i != j && i % 3 != j % 3 {
                    let est = nodes[i]
                        .coordinate()
                        .distance_to(nodes[j].coordinate())
                        .as_secs_f64();
                    errors.push((est - true_rtt(i, j)).abs() / true_rtt(i, j));
                }
            }
        }
        errors.sort_by(f64::total_cmp);
        let median = errors[errors.len() / 2];
        assert!(median < 0.10, "median relative error {median}");
    }

    #[test]
    fn absurd_samples_and_coordinates_are_rejected() {
        let mut v: Vivaldi<u8> = Vivaldi::default();
        let ok = Coordinate::default();
        assert!(v.observe(&1, &ok, Duration::ZERO).is_err());
        assert!(v.observe(&1, &ok, Duration::from_secs(3600)).is_err());
        let mut nan = Coordinate::default();
        nan.vec[3] = f64::NAN;
        assert_eq!(
            v.observe(&1, &nan, Duration::from_millis(5)),
            Err(SampleError::InvalidCoordinate)
        );
        let huge = Coordinate {
            height: 1e300,
            ..Coordinate::default()
        };
        assert!(v.observe(&1, &huge, Duration::from_millis(5)).is_err());
        v.observe(&1, &ok, Duration::from_millis(5)).unwrap();
        assert!(v.coordinate().is_valid());
    }

    proptest::proptest! {
        #[test]
        fn any_sequence_of_samples_keeps_the_coordinate_valid(
            samples in proptest::collection::vec((0u8..4, 1u64..10_000_000, -1e3f64..1e3, 0f64..2.0), 1..200)
        ) {
            let mut v: Vivaldi<u8> = Vivaldi::default();
            for (peer, micros, x, err) in samples {
                let mut other = Coordinate { error: err, ..Coordinate::default() };
                other.vec[0] = x;
                let _ = v.observe(&peer, &other, Duration::from_micros(micros));
                proptest::prop_assert!(v.coordinate().is_valid());
            }
        }
    }
}
