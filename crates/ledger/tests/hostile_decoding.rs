//! Structured hostile input for the `LEDGER` protocol (receipts handed to the sequencer, a
//! checkpoint shown to a witness with its batch, a settled checkpoint — any member may send
//! them) and for what a copy reads from the table and from other nodes (batch rows, receipts):
//! valid messages with a length or a count rewritten to something huge at every position, and
//! every truncation (`weft_core::wire::hostile`). Each answers at once.

use std::time::Duration;

use weft_core::wire::{self, hostile};
use weft_core::{ContentHash, SecretKey};
use weft_ledger::schema::{Batch, Head};
use weft_ledger::{LedgerAnswer, LedgerAsk, Receipt, ReceiptBody, Work};

/// Slower than this is allocating or looping on what a peer only declared.
const QUICK: Duration = Duration::from_millis(200);

fn receipt(seq: u64, work: Work) -> Receipt {
    let key = SecretKey::from_seed([3; 32]);
    Receipt::sign(
        &key,
        ReceiptBody {
            format: 1,
            node: key.public(),
            seq,
            prev: ContentHash([seq as u8; 32]),
            at_ms: 1_765_000_000_000,
            account: SecretKey::from_seed([4; 32]).public(),
            request: ContentHash::of(b"request"),
            work,
        },
    )
}

#[test]
fn ledger_messages_refuse_huge_claims_cheaply() {
    let job = receipt(
        0,
        Work::Job {
            job: "logs/0190a3b4c5d6e7f8".into(),
            attempt: 1,
            module: ContentHash::of(b"module"),
            result: ContentHash::of(b"result"),
            fuel: 12,
            bytes_in: 34,
            bytes_out: 56,
            wall_ms: 78,
            exit: Some(0),
        },
    );
    let chat = receipt(
        1,
        Work::Inference {
            model: "smollm2".into(),
            tokens_in: 9,
            tokens_out: 10,
        },
    );
    let batch = Batch {
        first: 7,
        maker: SecretKey::from_seed([5; 32]).public(),
        entries: vec![job.to_entry(), chat.to_entry()],
        prev: None,
    };
    let head = Head {
        note: "weft.fabric/x/ledger\n9\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n\n— n AAAAAAAA\n"
            .into(),
        batch: batch.reference(),
    };
    let asks = [
        LedgerAsk::Submit(vec![job.to_entry(), chat.to_entry()]),
        LedgerAsk::Cosign {
            note: head.note.clone(),
            batch: batch.reference(),
            entries: batch.entries.clone(),
            prev: Some(batch.reference()),
            cosigned: Some(head.clone()),
        },
        LedgerAsk::Settled(head.clone()),
    ];
    let mut checks = vec![
        ("receipt", hostile::slowest::<Receipt>(&wire::encode(&job))),
        ("batch", hostile::slowest::<Batch>(&wire::encode(&batch))),
        ("head", hostile::slowest::<Head>(&wire::encode(&head))),
        (
            "answer",
            hostile::slowest::<LedgerAnswer>(&wire::encode(&LedgerAnswer::Refused("no".into()))),
        ),
    ];
    for ask in &asks {
        checks.push(("ask", hostile::slowest::<LedgerAsk>(&wire::encode(ask))));
    }
    for (what, slowest) in checks {
        assert!(
            slowest < QUICK,
            "{what}: a hostile variant took {slowest:?}"
        );
    }
    // A log entry that is not a receipt, or one cut or changed anywhere, is refused, never a
    // panic.
    let entry = job.to_entry();
    for cut in 0..entry.len() {
        assert!(Receipt::from_entry(&entry[..cut]).is_err());
    }
    let mut flipped = entry.clone();
    for i in 0..flipped.len() {
        flipped[i] ^= 0x55;
        assert!(Receipt::from_entry(&flipped).is_err(), "byte {i}");
        flipped[i] ^= 0x55;
    }
}
