//! A member's copy of the ledger: the log in files (`weft-tlog`), where each node's receipt
//! chain stands in it, and where each receipt is.
//!
//! The copy has two parts. Its *settled* part (the log's published size) is the history a
//! quorum of members cosigned; it only ever grows. Beyond it, the *staged* part is the branch
//! this node follows toward the head: entries it checked itself (each a receipt its issuer
//! signed, next in the issuer's chain) that bring it exactly to checkpoints members signed.
//! The staged part can be dropped (back to the settled size) when a cosigned checkpoint shows
//! another branch. The node's *commitment* is the newest checkpoint it cosigned as a witness:
//! it cosigns only checkpoints consistent with it, and gives it up only for a checkpoint a
//! quorum cosigned, or when the member that signed it is revoked.

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

/// Parse a checkpoint note.
pub fn checkpoint_of(note: &str) -> Result<(Note, Checkpoint), ReplicaError> {
    let note = Note::parse(note).map_err(|e| ReplicaError::BadCheckpoint(e.to_string()))?;
    let checkpoint =
        Checkpoint::parse(&note.text).map_err(|e| ReplicaError::BadCheckpoint(e.to_string()))?;
    Ok((note, checkpoint))
}

/// Add a settled receipt's charge to its account's spending and its node's earnings.
fn count(spent: &mut HashMap<NodeId, (u64, u64)>, earned: &mut HashMap<NodeId, u64>, r: &Receipt) {
    let charge = r.charge();
    let s = spent.entry(r.body.account).or_default();
    s.0 = s.0.saturating_add(charge);
    s.1 += 1;
    let e = earned.entry(r.body.node).or_default();
    *e = e.saturating_add(charge);
}

/// Keep a storage receipt's charge by account and bucket (what prepays pay for).
fn count_storage(storage: &mut HashMap<(NodeId, String), Vec<(u64, u64)>>, r: &Receipt) {
    if let crate::receipt::Work::Storage { bucket, .. } = &r.body.work {
        storage
            .entry((r.body.account, bucket.clone()))
            .or_default()
            .push((r.body.at_ms, r.charge()));
    }
}

/// A replica of the ledger in a folder.
#[derive(Debug)]
pub struct Replica {
    dir: PathBuf,
    log: Log,
    /// The chains at the staged size, and at the settled size.
    chains: Chains,
    settled_chains: Chains,
    /// Per node, the log index of each of its receipts, by number (staged ones included).
    index: HashMap<NodeId, Vec<u64>>,
    /// Per account, the log indices of receipts of work done for it, in order.
    by_account: HashMap<NodeId, Vec<u64>>,
    /// Per account, what its settled receipts cost (micro-credits) and how many there are.
    spent: HashMap<NodeId, (u64, u64)>,
    /// Per node, what its settled receipts charged.
    earned: HashMap<NodeId, u64>,
    /// Each account's inference tokens in the last minute.
    recent: crate::rate::Recent,
    /// Per account and bucket, its settled storage charges: (issued ms, micro-credits).
    storage: HashMap<(NodeId, String), Vec<(u64, u64)>>,
    /// The batches of the staged part with who sequenced each, oldest first, and the batch
    /// ending at the settled size.
    staged_batches: Vec<(BatchRef, NodeId)>,
    /// The receipts of the staged part, in order (what settling advances the chains by).
    staged_receipts: Vec<Receipt>,
    settled_batch: Option<BatchRef>,
    /// The newest checkpoint this node cosigned.
    commitment: Option<String>,
}

const SETTLED_BATCH: &str = "settled-batch";
const COMMITMENT: &str = "commitment";

impl Replica {
    /// Open the replica in `dir` (created if missing) at its settled size, reading every entry
    /// once to index it.
    pub fn open(dir: &Path) -> Result<Replica, ReplicaError> {
        let mut log = Log::open(&dir.join("log"))?;
        let mut chains = Chains::default();
        let mut index: HashMap<NodeId, Vec<u64>> = HashMap::new();
        let mut by_account: HashMap<NodeId, Vec<u64>> = HashMap::new();
        let (mut spent, mut earned) = (HashMap::new(), HashMap::new());
        let mut recent = crate::rate::Recent::default();
        let mut storage = HashMap::new();
        let now = weft_net::now_ms();
        let mut failed = None;
        log.scan(0, |at, entry| {
            match Receipt::from_entry(entry) {
                Ok(r) => {
                    chains.advance(&r);
                    index.entry(r.body.node).or_default().push(at);
                    by_account.entry(r.body.account).or_default().push(at);
                    count(&mut spent, &mut earned, &r);
                    recent.take(&r, now);
                    count_storage(&mut storage, &r);
                }
                Err(error) => failed = failed.take().or(Some((at, error))),
            }
            Ok(())
        })?;
        if let Some((index, error)) = failed {
            return Err(ReplicaError::Receipt { index, error });
        }
        let settled_batch = std::fs::read(dir.join(SETTLED_BATCH))
            .ok()
            .and_then(|b| wire::decode(&b).ok());
        let commitment = std::fs::read_to_string(dir.join(COMMITMENT)).ok();
        Ok(Replica {
            dir: dir.to_path_buf(),
            log,
            settled_chains: chains.clone(),
            chains,
            index,
            by_account,
            spent,
            earned,
            recent,
            storage,
            staged_batches: Vec::new(),
            staged_receipts: Vec::new(),
            settled_batch,
            commitment,
        })
    }

    /// The settled size: what a quorum cosigned.
    pub fn size(&self) -> u64 {
        self.log.published_size()
    }

    /// The staged size: the end of the branch this node follows.
    pub fn staged_size(&self) -> u64 {
        self.log.size()
    }

    /// The tree hash at `size` (at most the staged size).
    pub fn root_at(&mut self, size: u64) -> Result<Hash, ReplicaError> {
        Ok(self.log.root_at(size)?)
    }

    /// The chains at the staged size: the next number and hash expected of each node.
    pub fn chains(&self) -> &Chains {
        &self.chains
    }

    /// The chains at the settled size.
    pub fn settled_chains(&self) -> &Chains {
        &self.settled_chains
    }

    /// The batch that ends at the staged size.
    pub fn last_batch(&self) -> Option<BatchRef> {
        self.staged_batches
            .last()
            .map(|(b, _)| *b)
            .or(self.settled_batch)
    }

    /// The batch that ends at the settled size.
    pub fn settled_batch(&self) -> Option<BatchRef> {
        self.settled_batch
    }

    /// The newest settled checkpoint: cosigned by a quorum.
    pub fn cosigned(&self) -> Option<&str> {
        self.log.checkpoint()
    }

    /// The newest checkpoint this node cosigned.
    pub fn commitment(&self) -> Option<&str> {
        self.commitment.as_deref()
    }

    /// Whether `checkpoint` is on the staged branch (its size at most the staged size, its
    /// root this copy's at that size).
    pub fn holds(&mut self, checkpoint: &Checkpoint) -> Result<bool, ReplicaError> {
        Ok(checkpoint.size <= self.staged_size()
            && self.root_at(checkpoint.size)? == checkpoint.root)
    }

    /// Whether cosigning `checkpoint` (on the staged branch) keeps the commitment: it is the
    /// commitment's or extends it.
    pub fn keeps_commitment(&mut self, checkpoint: &Checkpoint) -> Result<bool, ReplicaError> {
        let Some(note) = self.commitment.clone() else {
            return Ok(true);
        };
        let Ok((_, committed)) = checkpoint_of(&note) else {
            return Ok(true);
        };
        // Both on the staged branch: one is a prefix of the other.
        Ok(self.holds(&committed)? && self.holds(checkpoint)?)
    }

    /// Record `note` as cosigned by this node, if it is newer than the commitment.
    pub fn commit(&mut self, note: &str) -> Result<(), ReplicaError> {
        let (_, checkpoint) = checkpoint_of(note)?;
        let newer = self
            .commitment
            .as_deref()
            .and_then(|c| checkpoint_of(c).ok())
            .is_none_or(|(_, c)| c.size < checkpoint.size);
        if newer {
            self.write(COMMITMENT, note.as_bytes())?;
            self.commitment = Some(note.to_string());
        }
        Ok(())
    }

    /// Give the commitment up (a quorum cosigned another branch, or its signer was revoked).
    pub fn release_commitment(&mut self) -> Result<(), ReplicaError> {
        let _ = std::fs::remove_file(self.dir.join(COMMITMENT));
        self.commitment = None;
        Ok(())
    }

    fn write(&self, name: &str, bytes: &[u8]) -> Result<(), ReplicaError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, bytes)
            .and_then(|()| std::fs::File::open(&tmp).and_then(|f| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| ReplicaError::Log(LogError::Io { path, source }))
    }

    /// The size and root the staged branch would have with `entries` appended, after checking
    /// every one is a receipt next in its chain (nothing written).
    pub fn preview(&self, entries: &[Vec<u8>]) -> Result<(u64, Hash), ReplicaError> {
        self.next_receipts(entries)?;
        Ok(self.log.preview(entries))
    }

    /// `entries` read as receipts, each checked to be next in its chain after the staged part.
    fn next_receipts(&self, entries: &[Vec<u8>]) -> Result<Vec<Receipt>, ReplicaError> {
        let mut staged = self.chains.clone();
        let first = self.staged_size();
        let mut out = Vec::with_capacity(entries.len());
        for (i, entry) in entries.iter().enumerate() {
            let index = first + i as u64;
            let r = Receipt::from_entry(entry)
                .map_err(|error| ReplicaError::Receipt { index, error })?;
            staged
                .check(&r)
                .map_err(|error| ReplicaError::Chain { index, error })?;
            staged.advance(&r);
            out.push(r);
        }
        Ok(out)
    }

    /// Append `batch`'s `entries` to the staged branch; they must be receipts next in their
    /// chains and bring it to `checkpoint`'s tree, or nothing changes.
    pub fn stage(
        &mut self,
        entries: &[Vec<u8>],
        checkpoint: &Checkpoint,
        batch: BatchRef,
        maker: NodeId,
    ) -> Result<(), ReplicaError> {
        self.stage_all(entries, checkpoint, &[(batch, maker)])
    }

    /// The index from which the staged branch holds a batch sequenced by a member `void`
    /// says is revoked, if any.
    pub fn void_from(&self, void: impl Fn(&NodeId) -> bool) -> Option<u64> {
        self.staged_batches
            .iter()
            .find(|(_, maker)| void(maker))
            .map(|(b, _)| b.first)
    }

    /// [`Replica::stage`] for the entries of several batches at once, oldest first.
    pub fn stage_all(
        &mut self,
        entries: &[Vec<u8>],
        checkpoint: &Checkpoint,
        batches: &[(BatchRef, NodeId)],
    ) -> Result<(), ReplicaError> {
        let receipts = self.next_receipts(entries)?;
        if self.log.preview(entries) != (checkpoint.size, checkpoint.root) {
            return Err(ReplicaError::NotTheCheckpoint {
                size: checkpoint.size,
            });
        }
        let first = self.staged_size();
        if let Err(e) = self.log.integrate(entries) {
            // The log went back to its settled size: so does everything else.
            self.unstage()?;
            return Err(e.into());
        }
        for (i, r) in receipts.into_iter().enumerate() {
            self.chains.advance(&r);
            self.index
                .entry(r.body.node)
                .or_default()
                .push(first + i as u64);
            self.by_account
                .entry(r.body.account)
                .or_default()
                .push(first + i as u64);
            self.staged_receipts.push(r);
        }
        self.staged_batches.extend_from_slice(batches);
        Ok(())
    }

    /// Drop the staged branch: back to the settled size.
    pub fn unstage(&mut self) -> Result<(), ReplicaError> {
        self.log.abandon()?;
        let settled = self.size();
        self.chains = self.settled_chains.clone();
        for v in self.index.values_mut().chain(self.by_account.values_mut()) {
            v.retain(|at| *at < settled);
        }
        self.staged_batches.clear();
        self.staged_receipts.clear();
        Ok(())
    }

    /// Settle `note` (cosigned by a quorum, on the staged branch, at a batch's end): its tree
    /// becomes the settled part.
    pub fn settle(&mut self, note: &Note) -> Result<bool, ReplicaError> {
        let checkpoint = Checkpoint::parse(&note.text)
            .map_err(|e| ReplicaError::BadCheckpoint(e.to_string()))?;
        if checkpoint.size <= self.size() || !self.holds(&checkpoint)? {
            return Ok(false);
        }
        let Some(at) = self
            .staged_batches
            .iter()
            .position(|(b, _)| b.first + b.count == checkpoint.size)
        else {
            return Ok(false);
        };
        let settling = (checkpoint.size - self.size()) as usize;
        self.log.publish(note)?;
        let batch = self.staged_batches[at].0;
        self.write(SETTLED_BATCH, &wire::encode(&batch))?;
        self.staged_batches.drain(..=at);
        self.settled_batch = Some(batch);
        let now = weft_net::now_ms();
        for r in self.staged_receipts.drain(..settling) {
            self.settled_chains.advance(&r);
            count(&mut self.spent, &mut self.earned, &r);
            self.recent.take(&r, now);
            count_storage(&mut self.storage, &r);
        }
        Ok(true)
    }

    /// The log index of receipt `seq` of `node`, if the copy holds it.
    pub fn index_of(&self, node: &NodeId, seq: u64) -> Option<u64> {
        self.index.get(node)?.get(seq as usize).copied()
    }

    /// The log indices of receipts of work for `account`, below `size`, from the `skip`th on,
    /// at most `max`.
    pub fn indices_for(&self, account: &NodeId, size: u64, skip: usize, max: usize) -> Vec<u64> {
        self.by_account.get(account).map_or_else(Vec::new, |v| {
            v.iter()
                .copied()
                .filter(|at| *at < size)
                .skip(skip)
                .take(max)
                .collect()
        })
    }

    /// The receipt at log index `index`.
    pub fn receipt(&mut self, index: u64) -> Result<Receipt, ReplicaError> {
        Receipt::from_entry(&self.log.entry(index)?)
            .map_err(|error| ReplicaError::Receipt { index, error })
    }

    /// The inclusion proof of entry `index` in the tree of `size`.
    pub fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, ReplicaError> {
        Ok(self.log.inclusion_proof(index, size)?)
    }

    /// A tile or entry bundle of the settled log by its tlog-tiles path (`tile/0/000`,
    /// `tile/entries/000.p/5`), `None` if the path names nothing settled.
    pub fn read_tile(&self, rel: &str) -> Result<Option<Vec<u8>>, ReplicaError> {
        Ok(self.log.read_tile(rel)?)
    }

    /// The consistency proof from the tree of `old` to that of `new`.
    pub fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, ReplicaError> {
        Ok(self.log.consistency_proof(old, new)?)
    }

    /// What `account`'s settled receipts cost, micro-credits, and how many there are.
    pub fn spent_by(&self, account: &NodeId) -> (u64, u64) {
        self.spent.get(account).copied().unwrap_or((0, 0))
    }

    /// What `account`'s settled storage receipts for `bucket` issued in `from_ms..until_ms`
    /// cost, micro-credits.
    pub fn storage_charged(
        &self,
        account: &NodeId,
        bucket: &str,
        from_ms: u64,
        until_ms: u64,
    ) -> u64 {
        self.storage
            .get(&(*account, bucket.to_string()))
            .map_or(0, |v| {
                v.iter()
                    .filter(|(at, _)| (from_ms..until_ms).contains(at))
                    .fold(0u64, |s, (_, c)| s.saturating_add(*c))
            })
    }

    /// `account`'s AI tokens in settled receipts issued in the window before `now_ms`.
    pub fn recent_tokens(&self, account: &NodeId, now_ms: u64) -> u64 {
        self.recent.tokens(account, now_ms)
    }

    /// What `node`'s settled receipts charged, micro-credits.
    pub fn earned_by(&self, node: &NodeId) -> u64 {
        self.earned.get(node).copied().unwrap_or(0)
    }

    /// How many receipts of `node` the settled part holds.
    pub fn receipts_of(&self, node: &NodeId) -> u64 {
        self.settled_chains.next(node).0
    }
}
