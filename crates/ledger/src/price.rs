//! Prices and credits. Pure.
//!
//! Amounts are in **micro-credits** (µcr; one credit is [`MICRO`]). A provider publishes the
//! price per unit of each kind of work it does ([`Prices`], in its `lp` row); each receipt it
//! signs carries the unit price it charged (see [`crate::receipt`]), and what the receipt costs
//! its account follows from the work and that price alone ([`charge`]), so anyone holding the
//! log computes every account's spending and every node's earnings the same way.
//!
//! An account's balance is its free allowance ([`DEFAULT_ALLOWANCE`]), plus the credits the admin granted it, less what its
//! receipts cost; work is held against that balance while it runs ([`Balance::available`]).

use serde::{Deserialize, Serialize};

use crate::receipt::Work;

/// Micro-credits per credit.
pub const MICRO: u64 = 1_000_000;
/// The free allowance of an account: 10,000 credits.
pub const DEFAULT_ALLOWANCE: u64 = 10_000 * MICRO;

/// A provider's price list, in micro-credits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prices {
    /// Per 10⁹ units of fuel (about 10⁹ WebAssembly instructions).
    pub fuel_per_g: u64,
    /// Per 1,000 tokens, prompt and generated.
    pub tokens_per_k: u64,
    /// Per GB (10⁹ bytes) stored for a month (730 hours).
    pub storage_gb_month: u64,
    /// Per GB served.
    pub egress_gb: u64,
}

impl Default for Prices {
    /// 0.001 credits per 10⁹ fuel, 0.001 per 1,000 tokens, 0.1 per GB-month, 0.05 per GB out.
    fn default() -> Prices {
        Prices {
            fuel_per_g: 1_000,
            tokens_per_k: 1_000,
            storage_gb_month: 100_000,
            egress_gb: 50_000,
        }
    }
}

/// The most a price may be (1,000 credits per unit), so no product overflows what a balance
/// can hold.
pub const MAX_PRICE: u64 = 1_000 * MICRO;

impl Prices {
    /// The unit price of `work`'s kind.
    pub fn for_work(&self, work: &Work) -> u64 {
        match work {
            Work::Job { .. } => self.fuel_per_g,
            Work::Inference { .. } => self.tokens_per_k,
            Work::Storage { .. } => self.storage_gb_month,
            Work::Transfer { .. } => self.egress_gb,
        }
    }

    /// Whether every price is at most [`MAX_PRICE`].
    pub fn valid(&self) -> bool {
        [
            self.fuel_per_g,
            self.tokens_per_k,
            self.storage_gb_month,
            self.egress_gb,
        ]
        .iter()
        .all(|p| *p <= MAX_PRICE)
    }
}

/// `units × price / per`, rounded up, saturating.
fn scaled(units: u64, price: u64, per: u128) -> u64 {
    let v = (u128::from(units) * u128::from(price)).div_ceil(per);
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// What `work` costs at the unit price `price` (of its kind), in micro-credits.
pub fn charge(work: &Work, price: u64) -> u64 {
    match work {
        Work::Job { fuel, .. } => scaled(*fuel, price, 1_000_000_000),
        Work::Inference {
            tokens_in,
            tokens_out,
            ..
        } => scaled(tokens_in.saturating_add(*tokens_out), price, 1_000),
        Work::Storage { byte_hours, .. } => scaled(*byte_hours, price, 1_000_000_000 * 730),
        Work::Transfer { bytes } => scaled(*bytes, price, 1_000_000_000),
    }
}

/// Byte-hours of `bytes` held for `elapsed_ms` (rounded down, saturating).
pub fn byte_hours(bytes: u64, elapsed_ms: u64) -> u64 {
    let v = u128::from(bytes) * u128::from(elapsed_ms) / 3_600_000;
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// The most a job with a fuel limit of `fuel` can cost at `price` per 10⁹ fuel.
pub fn job_ceiling(fuel: u64, price: u64) -> u64 {
    scaled(fuel, price, 1_000_000_000)
}

/// An account's credits, in micro-credits.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    /// The account (hex).
    pub account: String,
    /// Its free allowance.
    pub allowance: u64,
    /// Credits the admin granted it.
    pub granted: u64,
    /// What its receipts in this node's copy of the log cost.
    pub spent: u64,
    /// Receipts counted.
    pub receipts: u64,
    /// Held for work under way (its jobs queued or running, at their most).
    pub held: u64,
    /// Set aside for prepaid buckets.
    #[serde(default)]
    pub prepaid: u64,
    /// Of `spent`, what prepaid buckets' credits paid (their storage in their terms).
    #[serde(default)]
    pub covered: u64,
}

impl Balance {
    /// Allowance and grants less spending and what prepaid buckets set aside (their storage is
    /// paid from those; negative: spent more than it had, which holds keep small).
    pub fn balance(&self) -> i128 {
        i128::from(self.allowance) + i128::from(self.granted) + i128::from(self.covered)
            - i128::from(self.spent)
            - i128::from(self.prepaid)
    }

    /// What new work may be held against: the balance less what is held.
    pub fn available(&self) -> i128 {
        self.balance() - i128::from(self.held)
    }
}

/// Micro-credits as credits, for people: `12.345678`.
pub fn credits(micro: i128) -> String {
    let sign = if micro < 0 { "-" } else { "" };
    let m = micro.unsigned_abs();
    format!(
        "{sign}{}.{:06}",
        m / u128::from(MICRO),
        m % u128::from(MICRO)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::ContentHash;

    fn job(fuel: u64) -> Work {
        Work::Job {
            job: "b/1".into(),
            attempt: 0,
            module: ContentHash([0; 32]),
            result: ContentHash([0; 32]),
            fuel,
            bytes_in: 0,
            bytes_out: 0,
            wall_ms: 0,
            exit: Some(0),
        }
    }

    #[test]
    fn charges_follow_from_the_work_and_the_unit_price_alone() {
        let p = Prices::default();
        assert_eq!(charge(&job(2_000_000_000), p.fuel_per_g), 2_000);
        // Rounded up: any work costs something at a price above zero.
        assert_eq!(charge(&job(1), p.fuel_per_g), 1);
        assert_eq!(charge(&job(1), 0), 0);
        let chat = Work::Inference {
            model: "m".into(),
            tokens_in: 1_500,
            tokens_out: 500,
        };
        assert_eq!(charge(&chat, p.for_work(&chat)), 2_000);
        let month = Work::Storage {
            bucket: "b".into(),
            byte_hours: 1_000_000_000 * 730,
            audits: 3,
        };
        assert_eq!(charge(&month, p.for_work(&month)), p.storage_gb_month);
        // A GB held for a month of 730 hours, billed an hour at a time.
        assert_eq!(byte_hours(1_000_000_000, 3_600_000), 1_000_000_000);
        assert_eq!(byte_hours(1_000, 1_800_000), 500);
        assert_eq!(byte_hours(u64::MAX, u64::MAX), u64::MAX);
        // Huge figures saturate instead of wrapping.
        assert_eq!(charge(&job(u64::MAX), MAX_PRICE), u64::MAX);
        assert_eq!(job_ceiling(5_000_000_000, 20_000), 100_000);
        assert_eq!(credits(12_345_678), "12.345678");
        assert_eq!(credits(-5), "-0.000005");
        let b = Balance {
            allowance: 10,
            granted: 5,
            spent: 12,
            held: 4,
            ..Balance::default()
        };
        assert_eq!((b.balance(), b.available()), (3, -1));
    }
}
