//! Tokens per minute, fabric-wide: the AI tokens of each account's inference receipts issued
//! in the last minute, as a copy of the log settles them. Every node reads the same log, so
//! every node enforces the same figure (about a second behind the work: receipts settle in
//! batches). Pure; the replica feeds it.

use std::collections::{HashMap, VecDeque};

use weft_core::NodeId;

use crate::receipt::{Receipt, Work};

/// The window, ms.
pub const WINDOW_MS: u64 = 60_000;
/// The most receipts kept per account (the oldest go first).
const KEPT_PER_ACCOUNT: usize = 65_536;

/// Each account's recent inference receipts: (issued, ms; tokens).
#[derive(Clone, Debug, Default)]
pub struct Recent {
    by_account: HashMap<NodeId, VecDeque<(u64, u64)>>,
}

impl Recent {
    /// Count `receipt` if it is inference work issued within the window before `now_ms`. A
    /// receipt dated in the future counts as issued now (no member can hold an account over
    /// its quota for longer than the window by post-dating).
    pub fn take(&mut self, receipt: &Receipt, now_ms: u64) {
        let Work::Inference {
            tokens_in,
            tokens_out,
            ..
        } = &receipt.body.work
        else {
            return;
        };
        let at = receipt.body.at_ms.min(now_ms);
        if at.saturating_add(WINDOW_MS) <= now_ms {
            return;
        }
        let list = self.by_account.entry(receipt.body.account).or_default();
        list.push_back((at, tokens_in.saturating_add(*tokens_out)));
        while list
            .front()
            .is_some_and(|(t, _)| t.saturating_add(WINDOW_MS) <= now_ms)
            || list.len() > KEPT_PER_ACCOUNT
        {
            list.pop_front();
        }
        if self.by_account.len() > KEPT_PER_ACCOUNT {
            self.by_account
                .retain(|_, l| l.back().is_some_and(|(t, _)| t + WINDOW_MS > now_ms));
        }
    }

    /// `account`'s tokens in the window before `now_ms`.
    pub fn tokens(&self, account: &NodeId, now_ms: u64) -> u64 {
        self.by_account.get(account).map_or(0, |l| {
            l.iter()
                .filter(|(t, _)| t.saturating_add(WINDOW_MS) > now_ms)
                .fold(0u64, |sum, (_, n)| sum.saturating_add(*n))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::receipt::{RECEIPT_FORMAT, ReceiptBody};
    use weft_core::{ContentHash, SecretKey};

    fn chat(account: &SecretKey, at_ms: u64, tokens: u64) -> Receipt {
        let node = SecretKey::from_seed([1; 32]);
        Receipt::sign(
            &node,
            ReceiptBody {
                format: RECEIPT_FORMAT,
                node: node.public(),
                seq: 0,
                prev: ContentHash([0; 32]),
                at_ms,
                account: account.public(),
                request: ContentHash([2; 32]),
                work: Work::Inference {
                    model: "m".into(),
                    tokens_in: tokens,
                    tokens_out: 0,
                },
            },
        )
    }

    #[test]
    fn tokens_count_for_a_minute_per_account() {
        let (a, b) = (SecretKey::from_seed([3; 32]), SecretKey::from_seed([4; 32]));
        let mut r = Recent::default();
        let now = 1_000_000;
        r.take(&chat(&a, now - 70_000, 100), now); // outside the window
        r.take(&chat(&a, now - 30_000, 10), now);
        r.take(&chat(&a, now, 5), now);
        r.take(&chat(&b, now, 7), now);
        assert_eq!(r.tokens(&a.public(), now), 15);
        assert_eq!(r.tokens(&b.public(), now), 7);
        // Thirty-one seconds on, the older one has left the window.
        assert_eq!(r.tokens(&a.public(), now + 31_000), 5);
        // Post-dated by an hour: counts as now, and leaves with the window.
        r.take(&chat(&b, now + 3_600_000, 1_000), now);
        assert_eq!(r.tokens(&b.public(), now), 1_007);
        assert_eq!(r.tokens(&b.public(), now + WINDOW_MS), 0);
    }
}
