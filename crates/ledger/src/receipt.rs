//! Receipts: a node's signed statement of one unit of work it did, for whom, and at whose
//! request. A node numbers its receipts and chains each to the one before (its hash), so once
//! a receipt is in the fabric's log its issuer can neither deny it nor slip another in before
//! it. Pure.

use serde::{Deserialize, Serialize};
use weft_core::{ContentHash, NodeId, SecretKey, Signature, wire};

/// The receipt format this build writes: 2, priced (the unit price charged, signed with the
/// body). It reads 1 too (unpriced: such a receipt costs nothing).
pub const RECEIPT_FORMAT: u8 = 2;
/// The largest encoded receipt accepted.
pub const MAX_RECEIPT: usize = 4096;
/// The signature domain of receipts.
const DOMAIN: &str = "weft/receipt";
/// A log entry's first byte for a receipt (other kinds of entry will come with other bytes).
pub const ENTRY_RECEIPT: u8 = 1;

/// What was done.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Work {
    /// An attempt of a job ran to its end.
    Job {
        /// The job's id.
        job: String,
        /// Which attempt.
        attempt: u32,
        /// The module's hash.
        module: ContentHash,
        /// The commitment to the result (its outputs, exit code, and the deterministic
        /// profile's id when the job ran under it).
        result: ContentHash,
        /// Fuel used.
        fuel: u64,
        /// Bytes of input read.
        bytes_in: u64,
        /// Bytes of output written.
        bytes_out: u64,
        /// Wall time, ms.
        wall_ms: u64,
        /// Exit code (`None`: trapped or killed).
        exit: Option<i32>,
    },
    /// Bytes held for a period, shown by audits the holder passed.
    Storage {
        /// The bucket the bytes are kept in (empty: objects stored under no name).
        bucket: String,
        /// Byte-hours held.
        byte_hours: u64,
        /// Audits passed in the period.
        audits: u32,
    },
    /// An inference request answered.
    Inference {
        /// The model.
        model: String,
        /// Prompt tokens.
        tokens_in: u64,
        /// Generated tokens.
        tokens_out: u64,
    },
    /// Bytes served to a reader.
    Transfer {
        /// Bytes.
        bytes: u64,
    },
}

/// The signed part of a receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// [`RECEIPT_FORMAT`].
    pub format: u8,
    /// The node that did the work and signs.
    pub node: NodeId,
    /// Its number in the node's chain, from 0.
    pub seq: u64,
    /// The hash of the node's receipt `seq - 1` (zeros for the first).
    pub prev: ContentHash,
    /// Unix ms it was issued.
    pub at_ms: u64,
    /// The account the work was for.
    pub account: NodeId,
    /// The hash of the signed request that asked for it (a job's record as its owner signed
    /// it, a request's signature): what binds the receipt to the requester.
    pub request: ContentHash,
    /// What was done.
    pub work: Work,
}

/// A receipt: its body, the node's signature, and (format 2) the unit price it charged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// What it says.
    pub body: ReceiptBody,
    /// The node's signature of the body (and, format 2, of the price).
    pub signature: Signature,
    /// The unit price of the work's kind, micro-credits (see [`crate::price`]); 0 in format 1.
    pub price: u64,
}

/// A receipt could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReceiptError {
    /// Larger than [`MAX_RECEIPT`].
    #[error("a receipt of {0} bytes; at most 4096")]
    TooLarge(usize),
    /// Not a receipt of a format this build reads.
    #[error("not a receipt this build reads")]
    Malformed,
    /// The signature does not verify.
    #[error("the receipt's signature does not verify")]
    BadSignature,
}

impl Receipt {
    /// Sign `body` with `key` (whose public key must be `body.node`), unpriced.
    pub fn sign(key: &SecretKey, body: ReceiptBody) -> Receipt {
        Receipt::sign_priced(key, body, 0)
    }

    /// Sign `body` and the unit price `price` it charges with `key` (a format 1 body is
    /// signed alone, and costs nothing).
    pub fn sign_priced(key: &SecretKey, body: ReceiptBody, price: u64) -> Receipt {
        let price = if body.format == 1 { 0 } else { price };
        let signature = key.sign(DOMAIN, &signed_bytes(&body, price));
        Receipt {
            body,
            signature,
            price,
        }
    }

    /// Whether the signature is the node's.
    pub fn verifies(&self) -> bool {
        (self.body.format != 1 || self.price == 0)
            && self.body.node.verify_once(
                DOMAIN,
                &signed_bytes(&self.body, self.price),
                &self.signature,
            )
    }

    /// What it costs its account, micro-credits.
    pub fn charge(&self) -> u64 {
        crate::price::charge(&self.body.work, self.price)
    }

    /// The receipt as a log entry.
    pub fn to_entry(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_RECEIPT];
        if self.body.format == 1 {
            out.extend_from_slice(&wire::encode(&(&self.body, &self.signature)));
        } else {
            out.extend_from_slice(&wire::encode(self));
        }
        out
    }

    /// Read a log entry holding a receipt, checking its size, format and signature.
    pub fn from_entry(entry: &[u8]) -> Result<Receipt, ReceiptError> {
        if entry.len() > MAX_RECEIPT {
            return Err(ReceiptError::TooLarge(entry.len()));
        }
        let (&kind, bytes) = entry.split_first().ok_or(ReceiptError::Malformed)?;
        if kind != ENTRY_RECEIPT {
            return Err(ReceiptError::Malformed);
        }
        let ((body, signature), rest): ((ReceiptBody, Signature), _) =
            wire::decode_prefix(bytes).map_err(|_| ReceiptError::Malformed)?;
        let price = match body.format {
            1 if rest.is_empty() => 0,
            2 => wire::decode::<u64>(rest).map_err(|_| ReceiptError::Malformed)?,
            _ => return Err(ReceiptError::Malformed),
        };
        let receipt = Receipt {
            body,
            signature,
            price,
        };
        if !receipt.verifies() {
            return Err(ReceiptError::BadSignature);
        }
        Ok(receipt)
    }

    /// Its hash (what the next receipt of the node chains to).
    pub fn hash(&self) -> ContentHash {
        ContentHash::of(&self.to_entry())
    }
}

/// What a receipt's signature covers: format 1, the body; later, the body and the price.
fn signed_bytes(body: &ReceiptBody, price: u64) -> Vec<u8> {
    if body.format == 1 {
        wire::encode(body)
    } else {
        wire::encode(&(body, price))
    }
}

/// Where each node's chain stands in a log: the next number expected and the hash to chain to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Chains {
    next: std::collections::HashMap<NodeId, (u64, ContentHash)>,
}

/// Why a receipt cannot be the next of its node's chain.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChainError {
    /// Already in the log (a resubmission).
    #[error("receipt {seq} of {node} is already in the log")]
    Already {
        /// The issuer.
        node: NodeId,
        /// Its number.
        seq: u64,
    },
    /// Receipts before it are missing.
    #[error("receipt {seq} of {node} comes before {next}")]
    Gap {
        /// The issuer.
        node: NodeId,
        /// Its number.
        seq: u64,
        /// The number expected.
        next: u64,
    },
    /// It does not chain to the receipt before it: the node rewrote its history.
    #[error("receipt {seq} of {node} does not chain to the one before it")]
    Broken {
        /// The issuer.
        node: NodeId,
        /// Its number.
        seq: u64,
    },
}

impl Chains {
    /// The next number expected of `node` and the hash it must chain to.
    pub fn next(&self, node: &NodeId) -> (u64, ContentHash) {
        self.next
            .get(node)
            .copied()
            .unwrap_or((0, ContentHash([0; 32])))
    }

    /// Whether `receipt` is the next of its chain.
    pub fn check(&self, receipt: &Receipt) -> Result<(), ChainError> {
        let (node, seq) = (receipt.body.node, receipt.body.seq);
        let (next, prev) = self.next(&node);
        if seq < next {
            return Err(ChainError::Already { node, seq });
        }
        if seq > next {
            return Err(ChainError::Gap { node, seq, next });
        }
        if receipt.body.prev != prev {
            return Err(ChainError::Broken { node, seq });
        }
        Ok(())
    }

    /// Take `receipt` as the next of its chain (after [`Chains::check`]).
    pub fn advance(&mut self, receipt: &Receipt) {
        self.next
            .insert(receipt.body.node, (receipt.body.seq + 1, receipt.hash()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(key: &SecretKey, seq: u64, prev: ContentHash) -> Receipt {
        Receipt::sign(
            key,
            ReceiptBody {
                format: RECEIPT_FORMAT,
                node: key.public(),
                seq,
                prev,
                at_ms: 1,
                account: SecretKey::from_seed([5; 32]).public(),
                request: ContentHash::of(b"request"),
                work: Work::Transfer { bytes: 10 },
            },
        )
    }

    #[test]
    fn priced_and_unpriced_receipts_read_back_and_a_changed_price_is_refused() {
        let key = SecretKey::from_seed([2; 32]);
        let mut body = receipt(&key, 0, ContentHash([0; 32])).body;
        body.work = Work::Transfer {
            bytes: 3_000_000_000,
        };
        let priced = Receipt::sign_priced(&key, body.clone(), 50_000);
        let back = Receipt::from_entry(&priced.to_entry()).unwrap();
        assert_eq!(back, priced);
        assert_eq!(back.charge(), 150_000);
        let mut cheaper = priced.clone();
        cheaper.price = 1;
        assert_eq!(
            Receipt::from_entry(&cheaper.to_entry()),
            Err(ReceiptError::BadSignature)
        );
        // A format 1 receipt (before prices) reads back as it was written, costing nothing.
        body.format = 1;
        let old = Receipt::sign_priced(&key, body, 50_000);
        assert_eq!(old.price, 0);
        let entry = old.to_entry();
        assert_eq!(entry[1..], wire::encode(&(&old.body, &old.signature))[..]);
        let back = Receipt::from_entry(&entry).unwrap();
        assert_eq!((back.charge(), back.hash()), (0, old.hash()));
        let mut with_tail = entry.clone();
        with_tail.push(0);
        assert_eq!(
            Receipt::from_entry(&with_tail),
            Err(ReceiptError::Malformed)
        );
    }

    #[test]
    fn receipts_read_back_only_as_signed_and_chain_in_order() {
        let key = SecretKey::from_seed([1; 32]);
        let first = receipt(&key, 0, ContentHash([0; 32]));
        let back = Receipt::from_entry(&first.to_entry()).unwrap();
        assert_eq!(back, first);
        let mut forged = first.clone();
        forged.body.work = Work::Transfer { bytes: 11 };
        assert_eq!(
            Receipt::from_entry(&forged.to_entry()),
            Err(ReceiptError::BadSignature)
        );
        assert_eq!(Receipt::from_entry(&[2, 0]), Err(ReceiptError::Malformed));
        assert_eq!(Receipt::from_entry(&[]), Err(ReceiptError::Malformed));
        let entry = first.to_entry();
        for cut in 0..entry.len() {
            assert!(Receipt::from_entry(&entry[..cut]).is_err());
        }

        let mut chains = Chains::default();
        chains.check(&first).unwrap();
        chains.advance(&first);
        assert!(matches!(
            chains.check(&first),
            Err(ChainError::Already { .. })
        ));
        let second = receipt(&key, 1, first.hash());
        let skipped = receipt(&key, 2, second.hash());
        assert!(matches!(
            chains.check(&skipped),
            Err(ChainError::Gap { next: 1, .. })
        ));
        let rewritten = receipt(&key, 1, ContentHash([9; 32]));
        assert!(matches!(
            chains.check(&rewritten),
            Err(ChainError::Broken { .. })
        ));
        chains.check(&second).unwrap();
    }
}
