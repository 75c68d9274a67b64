//! A member's copy of the ledger: the log in files (`weft-tlog`), where each node's receipt
//! chain stands in it, and where each receipt is. A replica only ever extends its log, and
//! only by entries it checked itself (each a receipt its issuer signed, next in the issuer's
//! chain) that bring it exactly to a checkpoint a member signed: so it never holds, nor
//! cosigns, two trees that do not extend one another.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use weft_core::{NodeId, wire};
use weft_tlog::{Checkpoint, Hash, Log, LogError, Note};

use crate::receipt::{ChainError, Chains, Receipt, ReceiptError};
use crate::schema::BatchRef;

/// Why a replica did not take entries.
#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    /// Its files.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An entry is not a receipt that verifies.
    #[error("entry {index}: {error}")]
    Receipt {
        /// The entry's index.
        index: u64,
        /// Why.
        error: ReceiptError,
    },
    /// An entry is not next in its issuer's chain.
    #[error("entry {index}: {error}")]
    Chain {
        /// The entry's index.
        index: u64,
        /// Why.
        error: ChainError,
    },
    /// The entries do not make the checkpoint's tree.
    #[error("the entries make another tree than the checkpoint of size {size}")]
    NotTheCheckpoint {
        /// The checkpoint's size.
        size: u64,
    },
    /// The checkpoint is unreadable.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(String),
}

/// A replica of the ledger in a folder.
#[derive(Debug)]
pub struct Replica {
    dir: PathBuf,
    log: Log,
    chains: Chains,
    /// Per node, the log index of each of its receipts, by number.
    index: HashMap<NodeId, Vec<u64>>,
    /// The batch that ends at the log's size.
    last_batch: Option<BatchRef>,
    /// The newest checkpoint known to be cosigned by a quorum.
    cosigned: Option<String>,
    /// The receipts integrated and not yet published.
    proposed: Vec<Receipt>,
}

const LAST_BATCH: &str = "last-batch";
const COSIGNED: &str = "cosigned";

/// Parse a checkpoint note's size and root.
pub fn checkpoint_of(note: &str) -> Result<(Note, Checkpoint), ReplicaError> {
    let note = Note::parse(note).map_err(|e| ReplicaError::BadCheckpoint(e.to_string()))?;
    let checkpoint =
        Checkpoint::parse(&note.text).map_err(|e| ReplicaError::BadCheckpoint(e.to_string()))?;
    Ok((note, checkpoint))
}

impl Replica {
    /// Open the replica in `dir` (created if missing), reading every entry once to index it.
    pub fn open(dir: &Path) -> Result<Replica, ReplicaError> {
        let mut log = Log::open(&dir.join("log"))?;
        let mut chains = Chains::default();
        let mut index: HashMap<NodeId, Vec<u64>> = HashMap::new();
        let mut failed = None;
        log.scan(0, |at, entry| {
            match Receipt::from_entry(entry) {
                Ok(r) => {
                    chains.advance(&r);
                    index.entry(r.body.node).or_default().push(at);
                }
                Err(error) => failed = failed.take().or(Some((at, error))),
            }
            Ok(())
        })?;
        if let Some((index, error)) = failed {
            return Err(ReplicaError::Receipt { index, error });
        }
        let last_batch = std::fs::read(dir.join(LAST_BATCH))
            .ok()
            .and_then(|b| wire::decode(&b).ok());
        let cosigned = std::fs::read_to_string(dir.join(COSIGNED)).ok();
        Ok(Replica {
            dir: dir.to_path_buf(),
            log,
            chains,
            index,
            last_batch,
            cosigned,
            proposed: Vec::new(),
        })
    }

    /// How many entries it holds (published).
    pub fn size(&self) -> u64 {
        self.log.published_size()
    }

    /// The tree hash at `size` (at most its own).
    pub fn root_at(&mut self, size: u64) -> Result<Hash, ReplicaError> {
        Ok(self.log.root_at(size)?)
    }

    /// The chains' state: the next number and hash expected of each node.
    pub fn chains(&self) -> &Chains {
        &self.chains
    }

    /// The batch that ends at its size.
    pub fn last_batch(&self) -> Option<BatchRef> {
        self.last_batch
    }

    /// The log's own checkpoint note (this replica's newest).
    pub fn checkpoint(&self) -> Option<&str> {
        self.log.checkpoint()
    }

    /// The newest checkpoint known to be cosigned by a quorum.
    pub fn cosigned(&self) -> Option<&str> {
        self.cosigned.as_deref()
    }

    /// Remember `note` as the newest cosigned checkpoint (the caller checked its
    /// cosignatures; it must be of a size this replica holds, with the same root).
    pub fn set_cosigned(&mut self, note: &str) -> Result<bool, ReplicaError> {
        let (_, checkpoint) = checkpoint_of(note)?;
        if checkpoint.size > self.size() || self.root_at(checkpoint.size)? != checkpoint.root {
            return Ok(false);
        }
        let newer = match &self.cosigned {
            Some(old) => checkpoint_of(old).map_or(true, |(_, c)| c.size < checkpoint.size),
            None => true,
        };
        if newer {
            std::fs::write(self.dir.join(COSIGNED), note).map_err(|source| LogError::Io {
                path: self.dir.join(COSIGNED),
                source,
            })?;
            self.cosigned = Some(note.to_string());
        }
        Ok(newer)
    }

    /// Check `entries` as the log's next and integrate them (not yet published): the new size
    /// and root. Entries that are not receipts next in their chains are refused, all of them.
    pub fn propose(&mut self, entries: &[Vec<u8>]) -> Result<(u64, Hash), ReplicaError> {
        self.log.abandon()?;
        let mut staged = self.chains.clone();
        let first = self.size();
        let mut proposed = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let index = first + i as u64;
            let r = Receipt::from_entry(entry)
                .map_err(|error| ReplicaError::Receipt { index, error })?;
            staged
                .check(&r)
                .map_err(|error| ReplicaError::Chain { index, error })?;
            staged.advance(&r);
            proposed.push(r);
        }
        self.log.integrate(entries)?;
        self.proposed = proposed;
        Ok((self.log.size(), self.log.root()))
    }

    /// Publish what [`Replica::propose`] integrated under `note` (its checkpoint must be of
    /// exactly that tree), `batch` being the batch that made it.
    pub fn confirm(&mut self, note: &Note, batch: BatchRef) -> Result<(), ReplicaError> {
        let checkpoint = Checkpoint::parse(&note.text)
            .map_err(|e| ReplicaError::BadCheckpoint(e.to_string()))?;
        if checkpoint.size != self.log.size() || checkpoint.root != self.log.root() {
            self.abandon()?;
            return Err(ReplicaError::NotTheCheckpoint {
                size: checkpoint.size,
            });
        }
        let first = self.size();
        self.log.publish(note)?;
        for (i, r) in std::mem::take(&mut self.proposed).iter().enumerate() {
            self.chains.advance(r);
            self.index
                .entry(r.body.node)
                .or_default()
                .push(first + i as u64);
        }
        let path = self.dir.join(LAST_BATCH);
        std::fs::write(&path, wire::encode(&batch))
            .map_err(|source| LogError::Io { path, source })?;
        self.last_batch = Some(batch);
        Ok(())
    }

    /// Drop what was proposed and not confirmed.
    pub fn abandon(&mut self) -> Result<(), ReplicaError> {
        self.proposed.clear();
        Ok(self.log.abandon()?)
    }

    /// Extend the log by `entries` to exactly `note`'s checkpoint.
    pub fn extend(
        &mut self,
        entries: &[Vec<u8>],
        note: &Note,
        batch: BatchRef,
    ) -> Result<(), ReplicaError> {
        self.propose(entries)?;
        self.confirm(note, batch)
    }

    /// The log index of receipt `seq` of `node`, if the log holds it.
    pub fn index_of(&self, node: &NodeId, seq: u64) -> Option<u64> {
        self.index.get(node)?.get(seq as usize).copied()
    }

    /// Entry `index`.
    pub fn entry(&mut self, index: u64) -> Result<Vec<u8>, ReplicaError> {
        Ok(self.log.entry(index)?)
    }

    /// The inclusion proof of entry `index` in the tree of `size`.
    pub fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, ReplicaError> {
        Ok(self.log.inclusion_proof(index, size)?)
    }

    /// The consistency proof from the tree of `old` to that of `new`.
    pub fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, ReplicaError> {
        Ok(self.log.consistency_proof(old, new)?)
    }

    /// How many receipts of `node` the log holds.
    pub fn receipts_of(&self, node: &NodeId) -> u64 {
        self.index.get(node).map_or(0, |v| v.len() as u64)
    }
}
