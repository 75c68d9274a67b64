//! Structured hostile input for the replica protocol's decoders (what any member, or a replica
//! answering, can send): valid messages with a length or count rewritten to something huge,
//! and rows whose priors nest deeper than any honest one. Every decoder answers quickly with
//! a value or an error — no panic, no allocation of what a peer merely announced, no stack
//! overflow.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use weft_core::wire::hostile::varint;
use weft_core::{SecretKey, wire};
use weft_meta::table::{MetaRequest, MetaResponse};
use weft_meta::{Entry, Item, Timestamp};

fn ts(wall: u64) -> Timestamp {
    Timestamp {
        wall,
        logical: 0,
        node: SecretKey::from_seed([9; 32]).public(),
    }
}

fn item(value_len: usize) -> Item {
    let key = SecretKey::from_seed([4; 32]);
    Item {
        pk: "kv/bucket".into(),
        sk: "key".into(),
        entry: Entry::sign(&key, "kv/bucket", "key", ts(7), Some(vec![1; value_len])),
    }
}

/// Decode `bytes` as every message of the protocol; how long it took.
fn decode_all(bytes: &[u8]) -> Duration {
    let t = Instant::now();
    let _ = wire::decode::<MetaRequest>(bytes);
    let _ = wire::decode::<MetaResponse>(bytes);
    let _ = wire::decode::<Item>(bytes);
    let _ = wire::decode::<Entry>(bytes);
    t.elapsed()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// A huge length or count written over any position of a valid message.
    #[test]
    fn huge_declared_lengths_and_counts_fail_cheaply(
        items in 1usize..4,
        value_len in 0usize..300,
        at in 0usize..2000,
        claim in (1u64 << 24)..u64::MAX,
        replace in any::<bool>(),
    ) {
        let msg = MetaRequest::Write((0..items).map(|_| item(value_len)).collect());
        let bytes = wire::encode(&msg);
        let at = at % bytes.len();
        let mut hostile = bytes[..at].to_vec();
        hostile.extend(varint(claim));
        // Either in place of what was there, or pushed in before it.
        let rest = if replace { (at + 1).min(bytes.len()) } else { at };
        hostile.extend_from_slice(&bytes[rest..]);
        prop_assert!(decode_all(&hostile) < Duration::from_millis(500));
        // The answers a replica gives carry the same rows.
        let answer = wire::encode(&MetaResponse::Items((0..items).map(|_| item(value_len)).collect()));
        let at = at % answer.len();
        let mut hostile = answer[..at].to_vec();
        hostile.extend(varint(claim));
        hostile.extend_from_slice(&answer[at..]);
        prop_assert!(decode_all(&hostile) < Duration::from_millis(500));
    }

    /// Rows whose priors nest `depth` deep, alone and inside a write: one prior decodes (an
    /// honest claim carries one), a deeper chain is refused, never a stack overflow (run on a
    /// thread with a small stack).
    #[test]
    fn nested_priors_past_one_are_refused(depth in 0usize..3000) {
        let (entry_ok, write_ok) = decode_nested(depth);
        prop_assert_eq!(entry_ok, depth <= 1);
        prop_assert_eq!(write_ok, depth <= 1);
    }
}

#[test]
fn the_honest_depths_decode_and_the_next_does_not() {
    for depth in 0..=3 {
        assert_eq!(
            decode_nested(depth),
            (depth <= 1, depth <= 1),
            "depth {depth}"
        );
    }
}

/// Whether an entry whose priors nest `depth` deep decodes, alone and inside a write.
fn decode_nested(depth: usize) -> (bool, bool) {
    {
        let key = SecretKey::from_seed([5; 32]);
        let base = Entry::sign(&key, "names", "x", ts(1), None);
        // An entry is its fields, then `prior` (an option), then `via` (an option): a chain is
        // each entry's fields followed by Some, down to the last one's None, then every
        // level's `via` None on the way back out.
        let whole = wire::encode(&base);
        let fields = &whole[..whole.len() - 2];
        let mut chain = Vec::new();
        for _ in 0..depth {
            chain.extend_from_slice(fields);
            chain.push(1);
        }
        chain.extend_from_slice(fields);
        chain.extend(std::iter::repeat_n(0u8, depth + 2));
        let mut write = vec![0u8]; // MetaRequest::Write
        write.extend(varint(1));
        write.extend(varint(5));
        write.extend_from_slice(b"names");
        write.extend(varint(1));
        write.extend_from_slice(b"x");
        write.extend_from_slice(&chain);
        let (entry_ok, write_ok) = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || {
                (
                    wire::decode::<Entry>(&chain).is_ok(),
                    wire::decode::<MetaRequest>(&write).is_ok(),
                )
            })
            .unwrap()
            .join()
            .expect("decoding must not overflow the stack");
        (entry_ok, write_ok)
    }
}
