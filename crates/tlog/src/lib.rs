//! A transparency log in the formats the transparency-log world uses: RFC 6962/9162 Merkle
//! trees and proofs ([`tree`]), C2SP signed notes, checkpoints and cosignatures ([`note`]),
//! the C2SP tlog-tiles layout ([`tiles`]), a log kept durably in files ([`log`]) and the
//! witness's rule ([`witness`]).
//!
//! It knows nothing of what the entries mean, of the network or of the fabric: the fabric's
//! ledger sequences receipts into a [`Log`], has it cosigned by witnesses among the other
//! nodes and serves its proofs. Everything but [`log`] is pure.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod hash;
pub mod log;
pub mod note;
pub mod tiles;
pub mod tree;
pub mod witness;

pub use hash::{Hash, leaf_hash, node_hash};
pub use log::{Log, LogError};
pub use note::{Checkpoint, Note, NoteError, NoteSignature, Signer, Verifier};
pub use tree::{
    Frontier, Subtrees, consistency_proof, inclusion_proof, root_of, verify_consistency,
    verify_inclusion,
};
pub use witness::{Seen, Witness, WitnessError, verify_cosigned};
