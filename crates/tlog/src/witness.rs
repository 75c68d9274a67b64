//! A witness: it cosigns a log's checkpoint only if the checkpoint extends, by a consistency
//! proof it checked itself, the last one it cosigned for that log (the C2SP tlog-witness
//! rule). A log that rewrites its history, or shows different trees to different readers,
//! then gets a witness's cosignature for at most one of them: readers who require cosignatures
//! from more than half of a log's witnesses can never both be satisfied by two trees that do
//! not extend one another, unless a majority of witnesses collude.
//!
//! Pure: the state is a value the caller keeps (and persists); time is passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::hash::Hash;
use crate::note::{Checkpoint, Note, NoteSignature, Signer, Verifier};
use crate::tree::verify_consistency;

/// What a witness remembers of one log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The log's key.
    pub log: (String, weft_core::NodeId),
    /// The size and root last cosigned (0 and the empty root before the first).
    pub size: u64,
    /// The root at that size.
    pub root: Hash,
    /// The checkpoint note last cosigned, as the log signed it (evidence, if the log later
    /// signs another tree of the same size).
    pub note: Option<String>,
}

/// Why a witness refused a checkpoint.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WitnessError {
    /// The checkpoint is of a log this witness does not watch.
    #[error("this witness does not watch the log {0:?}")]
    UnknownLog(String),
    /// The note is malformed or not signed by the log's key.
    #[error("the checkpoint is malformed or not signed by the log: {0}")]
    BadNote(String),
    /// The proof starts from another size than the witness's (C2SP's 409 Conflict): the log
    /// should retry from `known`.
    #[error("the witness last cosigned size {known}, not {claimed}")]
    Conflict {
        /// The size the witness holds.
        known: u64,
        /// The size the log claimed it holds.
        claimed: u64,
    },
    /// The checkpoint is smaller than one already cosigned.
    #[error("the log went back from size {known} to {size}")]
    Rollback {
        /// The size the witness holds.
        known: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// The log signed two different trees of one size: both notes are proof of it.
    #[error("the log signed two different trees of size {size}")]
    Forked {
        /// The size.
        size: u64,
        /// The note this witness cosigned before.
        cosigned: String,
        /// The note it was shown now.
        shown: String,
    },
    /// The consistency proof does not verify: the new tree does not extend the old.
    #[error(
        "the checkpoint of size {size} does not extend size {known}: its history was rewritten"
    )]
    Inconsistent {
        /// The size the witness holds.
        known: u64,
        /// The checkpoint's size.
        size: u64,
    },
}

/// A witness: its key and what it saw of each log it watches.
#[derive(Clone, Debug)]
pub struct Witness {
    signer: Signer,
    logs: BTreeMap<String, Seen>,
}

impl Witness {
    /// A witness that signs with `signer` and remembers `logs` (its state, by origin).
    pub fn new(signer: Signer, logs: BTreeMap<String, Seen>) -> Witness {
        Witness { signer, logs }
    }

    /// Watch the log `origin`, signed by `log`, from the empty tree (no-op if watched).
    pub fn watch(&mut self, origin: &str, log: &Verifier) {
        self.logs.entry(origin.to_string()).or_insert_with(|| Seen {
            log: (log.name.clone(), log.key),
            size: 0,
            root: Hash::empty(),
            note: None,
        });
    }

    /// What this witness remembers, by origin (to persist).
    pub fn state(&self) -> &BTreeMap<String, Seen> {
        &self.logs
    }

    /// Who checks this witness's cosignatures.
    pub fn verifier(&self) -> Verifier {
        self.signer.verifier()
    }

    /// Cosign `note` if its checkpoint extends the last one cosigned for its log: `old` is the
    /// size the log believes this witness holds and `proof` the consistency proof from it.
    pub fn add_checkpoint(
        &mut self,
        note: &str,
        old: u64,
        proof: &[Hash],
        now_secs: u64,
    ) -> Result<NoteSignature, WitnessError> {
        let parsed = Note::parse(note).map_err(|e| WitnessError::BadNote(e.to_string()))?;
        let checkpoint =
            Checkpoint::parse(&parsed.text).map_err(|e| WitnessError::BadNote(e.to_string()))?;
        let seen = self
            .logs
            .get_mut(&checkpoint.origin)
            .ok_or_else(|| WitnessError::UnknownLog(checkpoint.origin.clone()))?;
        let log = Verifier {
            name: seen.log.0.clone(),
            key: seen.log.1,
        };
        if !parsed.signed_by(&log) {
            return Err(WitnessError::BadNote(
                "no signature of the log's key".into(),
            ));
        }
        if checkpoint.size < seen.size {
            return Err(WitnessError::Rollback {
                known: seen.size,
                size: checkpoint.size,
            });
        }
        if checkpoint.size == seen.size && checkpoint.root != seen.root {
            return Err(WitnessError::Forked {
                size: seen.size,
                cosigned: seen.note.clone().unwrap_or_default(),
                shown: note.to_string(),
            });
        }
        if old != seen.size {
            return Err(WitnessError::Conflict {
                known: seen.size,
                claimed: old,
            });
        }
        if !verify_consistency(
            seen.size,
            checkpoint.size,
            &seen.root,
            &checkpoint.root,
            proof,
        ) {
            return Err(WitnessError::Inconsistent {
                known: seen.size,
                size: checkpoint.size,
            });
        }
        let cosignature = self
            .signer
            .cosignature(&parsed.text, now_secs)
            .map_err(|e| WitnessError::BadNote(e.to_string()))?;
        seen.size = checkpoint.size;
        seen.root = checkpoint.root;
        let mut own = Note {
            text: parsed.text,
            signatures: parsed
                .signatures
                .into_iter()
                .filter(|s| s.name == log.name && s.key_id == log.key_id())
                .collect(),
        };
        own.signatures.truncate(1);
        seen.note = Some(own.encode());
        Ok(cosignature)
    }
}

/// Whether `note` is a checkpoint signed by `log` and cosigned by at least `quorum` of
/// `witnesses` (each counted once): what a reader requires before trusting a tree.
pub fn verify_cosigned(
    note: &str,
    log: &Verifier,
    witnesses: &[Verifier],
    quorum: usize,
) -> Option<Checkpoint> {
    let parsed = Note::parse(note).ok()?;
    if !parsed.signed_by(log) {
        return None;
    }
    let mut counted: Vec<&Verifier> = Vec::new();
    for w in witnesses {
        if !counted.contains(&w) && parsed.cosigned_by(w).is_some() {
            counted.push(w);
        }
    }
    (counted.len() >= quorum)
        .then(|| Checkpoint::parse(&parsed.text).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use crate::tree::{consistency_proof, root_of};
    use weft_core::SecretKey;

    const ORIGIN: &str = "weft.test/ledger";

    fn log_signer() -> Signer {
        Signer::new("weft.test/ledger", SecretKey::from_seed([1; 32])).unwrap()
    }

    fn witness(seed: u8) -> Witness {
        let signer =
            Signer::new(&format!("witness-{seed}"), SecretKey::from_seed([seed; 32])).unwrap();
        let mut w = Witness::new(signer, BTreeMap::new());
        w.watch(ORIGIN, &log_signer().verifier());
        w
    }

    /// A log in memory: its leaves, and the signed checkpoint of its first `size`.
    fn checkpoint(leaves: &[Hash], size: usize) -> String {
        let text = Checkpoint {
            origin: ORIGIN.into(),
            size: size as u64,
            root: root_of(&leaves[..size]),
            extensions: vec![],
        }
        .text();
        log_signer().sign(&text).unwrap().encode()
    }

    fn proof(leaves: &[Hash], old: usize, new: usize) -> Vec<Hash> {
        consistency_proof(&mut &leaves[..], old as u64, new as u64).unwrap()
    }

    fn leaves(tag: &str, n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("{tag}{i}").as_bytes()))
            .collect()
    }

    fn cosign(
        w: &mut Witness,
        leaves: &[Hash],
        old: usize,
        new: usize,
    ) -> Result<NoteSignature, WitnessError> {
        w.add_checkpoint(
            &checkpoint(leaves, new),
            old as u64,
            &proof(leaves, old, new),
            1000,
        )
    }

    #[test]
    fn a_witness_cosigns_a_growing_log_and_readers_count_its_cosignatures() {
        let mut ws = [witness(2), witness(3), witness(4)];
        let verifiers: Vec<Verifier> = ws.iter().map(Witness::verifier).collect();
        let all = leaves("e", 40);
        let mut last = 0;
        for size in [1, 5, 16, 17, 40] {
            let mut note = Note::parse(&checkpoint(&all, size)).unwrap();
            for w in &mut ws[..2] {
                note.add(cosign(w, &all, last, size).unwrap());
            }
            last = size;
            let text = note.encode();
            let cp = verify_cosigned(&text, &log_signer().verifier(), &verifiers, 2).unwrap();
            assert_eq!(cp.size, size as u64);
            assert!(verify_cosigned(&text, &log_signer().verifier(), &verifiers, 3).is_none());
        }
        // The same cosignature twice counts once.
        let mut note = Note::parse(&checkpoint(&all, 40)).unwrap();
        let sig = ws[0]
            .add_checkpoint(&checkpoint(&all, 40), 40, &[], 1001)
            .unwrap();
        note.signatures.push(sig.clone());
        note.signatures.push(sig);
        assert!(verify_cosigned(&note.encode(), &log_signer().verifier(), &verifiers, 2).is_none());
    }

    #[test]
    fn a_log_that_rewrites_its_history_is_refused() {
        let mut w = witness(2);
        let honest = leaves("e", 20);
        cosign(&mut w, &honest, 0, 10).unwrap();
        // Entry 3 changed, then the log grew: no proof from what the witness saw verifies.
        let mut rewritten = honest.clone();
        rewritten[3] = leaf_hash(b"rewritten");
        let err = cosign(&mut w, &rewritten, 10, 20).unwrap_err();
        assert_eq!(
            err,
            WitnessError::Inconsistent {
                known: 10,
                size: 20
            }
        );
        // Another tree of the size it cosigned: both signed notes are evidence.
        let err = cosign(&mut w, &rewritten, 10, 10).unwrap_err();
        let WitnessError::Forked {
            size,
            cosigned,
            shown,
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(size, 10);
        let (a, b) = (
            Note::parse(&cosigned).unwrap(),
            Note::parse(&shown).unwrap(),
        );
        assert!(a.signed_by(&log_signer().verifier()) && b.signed_by(&log_signer().verifier()));
        assert_ne!(
            Checkpoint::parse(&a.text).unwrap().root,
            Checkpoint::parse(&b.text).unwrap().root
        );
        // Going back, or claiming the witness is elsewhere, is refused too.
        assert_eq!(
            cosign(&mut w, &honest, 0, 5).unwrap_err(),
            WitnessError::Rollback { known: 10, size: 5 }
        );
        assert_eq!(
            cosign(&mut w, &honest, 12, 20).unwrap_err(),
            WitnessError::Conflict {
                known: 10,
                claimed: 12
            }
        );
        // A checkpoint signed by another key, or of a log it does not watch.
        let other = Signer::new("weft.test/ledger", SecretKey::from_seed([9; 32])).unwrap();
        let forged = other
            .sign(
                &Checkpoint::parse(&Note::parse(&checkpoint(&honest, 20)).unwrap().text)
                    .unwrap()
                    .text(),
            )
            .unwrap();
        assert!(matches!(
            w.add_checkpoint(&forged.encode(), 10, &proof(&honest, 10, 20), 1),
            Err(WitnessError::BadNote(_))
        ));
        cosign(&mut w, &honest, 10, 20).unwrap();
        assert_eq!(w.state()[ORIGIN].size, 20);
    }

    #[test]
    fn a_split_view_cannot_reach_a_quorum_without_colluding_witnesses() {
        let mut ws = [witness(2), witness(3), witness(4)];
        let verifiers: Vec<Verifier> = ws.iter().map(Witness::verifier).collect();
        let common = leaves("c", 8);
        for w in &mut ws {
            cosign(w, &common, 0, 8).unwrap();
        }
        // The sequencer forks: view A for some readers, view B for others.
        let mut a = common.clone();
        a.extend(leaves("a", 4));
        let mut b = common.clone();
        b.extend(leaves("b", 6));
        let mut note_a = Note::parse(&checkpoint(&a, 12)).unwrap();
        for w in &mut ws[..2] {
            note_a.add(cosign(w, &a, 8, 12).unwrap());
        }
        let mut note_b = Note::parse(&checkpoint(&b, 14)).unwrap();
        for w in &mut ws[1..] {
            // The witness that saw A refuses B whatever proof the sequencer makes up.
            if let Ok(sig) = cosign(w, &b, 8, 14) {
                note_b.add(sig);
            }
        }
        let log = log_signer().verifier();
        assert!(verify_cosigned(&note_a.encode(), &log, &verifiers, 2).is_some());
        assert!(verify_cosigned(&note_b.encode(), &log, &verifiers, 2).is_none());
        assert!(cosign(&mut ws[1], &b, 12, 14).is_err());
    }
}
