//! The fabric's ledger: every node signs a receipt for each unit of work it does
//! ([`receipt`]), keeps them in its own chain ([`issued`]) and hands them to the sequencer,
//! which appends them to one transparency log; every member keeps a copy of that log
//! ([`replica`]) and, as a witness, cosigns a checkpoint only once its own copy, extended by
//! entries it checked itself, reaches exactly that tree.
//!
//! **Sequencing.** There is no special node. The log's head is a table row (`lh/head`, see
//! [`schema`]) that a node replaces only by a conditional write from the head it extended, so
//! whoever sequences, the log has one history; its entries live in batch rows, each named by
//! its content and linked to the one before, so any member can rebuild the log from the table.
//! Receipts go to the *designated* sequencer — the first live member in rendezvous order of
//! the log's origin — and when it dies the next one in that order takes over (it first brings
//! its copy to the head). Two nodes that both believe they are designated only race for the
//! conditional write; the loser catches up and tries again.
//!
//! **Witnesses.** A checkpoint counts once more than half of the other members (revoked and
//! departed ones aside) cosigned it; the cosigned checkpoint goes to `lh/cosigned` and each
//! replica keeps the newest it checked. A sequencer that rewrites history or shows different
//! trees to different readers needs that many colluding witnesses.

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

pub mod audit;
pub mod credits;
pub mod fault;
pub mod issued;
pub mod meter;
pub mod prepay;
pub mod price;
pub mod rate;
pub mod receipt;
pub mod replica;
pub mod schema;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use weft_core::{ContentHash, NodeId, SecretKey, proto};
use weft_fabric::{Fabric, MemberState};
use weft_host::{Context, HostError, Service};
use weft_meta::{MetaError, Table};
use weft_net::{Endpoint, Rpc};
use weft_tlog::{Checkpoint, Note, NoteSignature, Signer, Verifier};

pub use fault::{Fault, FaultError};
pub use issued::{Issued, IssuedError};
pub use price::{Balance, Prices};
pub use receipt::{Receipt, ReceiptBody, Work};
pub use replica::{Replica, ReplicaError};
use schema::{Batch, BatchRef, Batches, Head, Heads};

/// The batch ending at the settled `size`.
fn replica_settled_batch(replica: &Replica, size: u64) -> Option<BatchRef> {
    replica
        .settled_batch()
        .filter(|b| b.first + b.count == size)
}

/// The most entries one batch takes (a batch row stays well under the table's 1 MiB).
pub const BATCH_MAX: usize = 2048;
/// The most receipts one hand-over carries.
const SUBMIT_MAX: usize = 1024;
/// The most receipts the sequencer queues.
const QUEUE_MAX: usize = 65_536;
/// How often a node looks whether its receipts are in the log, and hands them over again.
const SUBMIT_EVERY: Duration = Duration::from_millis(200);
/// How long a node waits for receipts it handed over to appear before handing them again.
const RESUBMIT_AFTER: Duration = Duration::from_secs(3);
/// How often every replica reads the newest cosigned checkpoint and follows it.
const FOLLOW_EVERY: Duration = Duration::from_secs(2);
/// How often a sequencer with a staged, unsettled head asks its witnesses again.
const REGATHER_EVERY: Duration = Duration::from_secs(1);
/// The most batches one catch-up walks back through.
const WALK_MAX: usize = 100_000;

/// The ledger protocol (`proto::LEDGER`).
pub const LEDGER_RPC: Rpc<LedgerAsk, LedgerAnswer> =
    Rpc::new(proto::LEDGER, 2 << 20, 64 << 10, Duration::from_secs(20));

/// Questions of the ledger protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LedgerAsk {
    /// Receipts of the asking node, for the sequencer (log entries, in its chain's order).
    Submit(Vec<Vec<u8>>),
    /// A checkpoint a quorum cosigned, with its batch: settle it.
    Settled(Head),
    /// Cosign this checkpoint: the sequencer's note, the batch that made it, and that batch's
    /// entries (used if the witness is at `batch.first`; otherwise it follows the table).
    Cosign {
        /// The checkpoint note, signed by the asking node.
        note: String,
        /// The batch ending at its size.
        batch: BatchRef,
        /// The batch's entries.
        entries: Vec<Vec<u8>>,
        /// The batch before it.
        prev: Option<BatchRef>,
        /// The newest checkpoint a quorum cosigned, with its batch (so witnesses settle it).
        cosigned: Option<Head>,
    },
}

/// Answers of the ledger protocol.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum LedgerAnswer {
    /// Receipts queued.
    Taken,
    /// This node does not sequence now (the asker should find the designated sequencer).
    NotSequencer,
    /// The witness's cosignature.
    Cosigned(NoteSignature),
    /// Refused, with why.
    Refused(String),
}

/// What went wrong in the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The node's own receipt store.
    #[error(transparent)]
    Issued(#[from] IssuedError),
    /// The node's copy of the log.
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    /// The table.
    #[error(transparent)]
    Meta(#[from] MetaError),
    /// The log's rows do not make a history this node can take.
    #[error("the ledger's rows do not extend this node's copy: {0}")]
    Diverged(String),
    /// The node's copy of the log does not pass an audit.
    #[error("{0}")]
    Audit(String),
    /// The asked receipt is not in the log (yet).
    #[error("receipt {seq} of node {node} is not in the ledger yet")]
    NotYet {
        /// The issuer.
        node: NodeId,
        /// Its number.
        seq: u64,
    },
}

/// Where the ledger stands on this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerStatus {
    /// The log's origin (its name in checkpoints).
    pub origin: String,
    /// Entries in this node's copy that a quorum cosigned.
    pub size: u64,
    /// Entries on the branch it follows toward the head (cosigned or not yet).
    pub staged: u64,
    /// The size of the newest checkpoint this node knows cosigned by a quorum.
    pub cosigned: Option<u64>,
    /// Receipts this node issued.
    pub issued: u64,
    /// Of those, how many the log holds.
    pub included: u64,
    /// The member this node hands receipts to.
    pub sequencer: Option<NodeId>,
}

/// The work a node's receipts in the cosigned log add up to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkDone {
    /// The node (hex).
    pub node: String,
    /// Its receipts in the log.
    pub receipts: u64,
    /// Job attempts run to their end.
    pub jobs: u64,
    /// Fuel they used.
    pub fuel: u64,
    /// Bytes they read.
    pub bytes_in: u64,
    /// Bytes they wrote.
    pub bytes_out: u64,
    /// Their wall time, ms.
    pub wall_ms: u64,
    /// Inference requests answered.
    pub requests: u64,
    /// Prompt tokens.
    pub tokens_in: u64,
    /// Generated tokens.
    pub tokens_out: u64,
    /// Distinct accounts the work was for.
    pub accounts: u64,
    /// What its receipts charged, micro-credits: in all, for jobs, for inference.
    #[serde(default)]
    pub earned: u64,
    /// Of which for jobs.
    #[serde(default)]
    pub earned_jobs: u64,
    /// Of which for inference.
    #[serde(default)]
    pub earned_inference: u64,
    /// Byte-hours of storage held.
    #[serde(default)]
    pub byte_hours: u64,
    /// Of `earned`, for storage.
    #[serde(default)]
    pub earned_storage: u64,
    /// Bytes served to clients.
    #[serde(default)]
    pub bytes_served: u64,
    /// Of `earned`, for bytes served.
    #[serde(default)]
    pub earned_transfer: u64,
    /// The node's prices now.
    #[serde(default)]
    pub prices: Option<Prices>,
}

/// A receipt with the proof that the log holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Included {
    /// The receipt.
    pub receipt: Receipt,
    /// Its index in the log.
    pub index: u64,
    /// The inclusion proof in the tree of the checkpoint.
    pub proof: Vec<weft_tlog::Hash>,
    /// The cosigned checkpoint note the proof is against.
    pub checkpoint: String,
}

/// The ledger service.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: Endpoint,
    fabric: Fabric,
    table: Table,
    tasks: weft_host::Tasks,
    key: SecretKey,
    origin: String,
    signer: Signer,
    issued: Mutex<Issued>,
    replica: Mutex<Replica>,
    /// Receipts handed to this node as sequencer.
    queue: Mutex<Vec<Receipt>>,
    /// Wakes the sequencer (receipts queued).
    wake: Notify,
    /// Wakes the hand-over (receipts issued).
    issued_wake: Notify,
    /// One change of the replica at a time (a round, a cosignature, a catch-up).
    changing: tokio::sync::Mutex<()>,
    /// What this node last handed over: (up to which number, when).
    handed: Mutex<(u64, Option<Instant>)>,
    /// This node's prices (what its receipts charge).
    prices: price::Prices,
    /// Every node's prices as last read, and when.
    price_lists: Mutex<(HashMap<NodeId, price::Prices>, Option<Instant>)>,
    /// Accounts' granted credits as last read, and when.
    granted: Mutex<HashMap<NodeId, CreditsRead>>,
    /// Bytes served per account since the last transfer receipts.
    served: Mutex<meter::Meter>,
}

/// An account's grants (their sum) and prepays as last read, and when.
type CreditsRead = (u64, Arc<Vec<prepay::Prepay>>, Instant);

/// A checkpoint that verified: what it says, who signed it, who cosigned it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The checkpoint.
    pub checkpoint: Checkpoint,
    /// The member that signed it as sequencer.
    pub signer: NodeId,
    /// The members that cosigned it.
    pub cosigners: Vec<NodeId>,
    /// How many cosignatures it needed.
    pub quorum: usize,
}

/// Whether `note` is a checkpoint of the log `origin` signed by one of `members` and
/// cosigned by more than half of the others — the rule every node and client applies (the
/// client with the member list a node gave it).
pub fn verify_checkpoint(note: &str, origin: &str, members: &[NodeId]) -> Option<Verified> {
    let parsed = Note::parse(note).ok()?;
    let checkpoint = Checkpoint::parse(&parsed.text).ok()?;
    if checkpoint.origin != origin {
        return None;
    }
    let signer = *members.iter().find(|id| parsed.signed_by(&verifier(id)))?;
    let others: Vec<NodeId> = members.iter().copied().filter(|id| *id != signer).collect();
    let quorum = quorum_of(others.len());
    let mut cosigners: Vec<NodeId> = others
        .iter()
        .copied()
        .filter(|id| parsed.cosigned_by(&verifier(id)).is_some())
        .collect();
    cosigners.dedup();
    (cosigners.len() >= quorum).then_some(Verified {
        checkpoint,
        signer,
        cosigners,
        quorum,
    })
}

impl Drop for Inner {
    /// Receipts signed but not yet written are written when the service goes (a node that
    /// stops writes them; one that dies loses only receipts it never handed anyone).
    fn drop(&mut self) {
        if let Err(e) = self.issued.lock().flush() {
            tracing::warn!("ledger: writing the last receipts: {e}");
        }
    }
}

/// More than half of `others` (none of none).
fn quorum_of(others: usize) -> usize {
    if others == 0 { 0 } else { others / 2 + 1 }
}

/// Who checks `node`'s signatures on checkpoints.
pub fn verifier(node: &NodeId) -> Verifier {
    Verifier {
        name: signer_name(node),
        key: *node,
    }
}

/// The name a node's key signs checkpoints under: its id in hex.
pub fn signer_name(node: &NodeId) -> String {
    node.to_hex()
}

impl Service for Ledger {
    const NAME: &'static str = "ledger";

    fn start(ctx: &Context) -> Result<Self, HostError> {
        let failed = |why: String| HostError::Failed {
            service: Self::NAME,
            why,
        };
        let dir = ctx.folder("ledger");
        std::fs::create_dir_all(&dir).map_err(|e| failed(format!("{}: {e}", dir.display())))?;
        let issued = Issued::open(&dir.join("issued.redb")).map_err(|e| failed(e.to_string()))?;
        let replica = Replica::open(&dir).map_err(|e| failed(e.to_string()))?;
        let fabric_id = ctx.endpoint.trust().fabric();
        let origin = format!("weft.fabric/{}/ledger", fabric_id.to_hex());
        let signer = Signer::new(&signer_name(&ctx.id()), ctx.key.clone())
            .map_err(|e| failed(e.to_string()))?;
        let ledger = Ledger {
            inner: Arc::new(Inner {
                endpoint: ctx.endpoint.clone(),
                fabric: ctx.fabric.clone(),
                table: ctx.table.clone(),
                tasks: ctx.tasks(),
                key: ctx.key.clone(),
                origin,
                signer,
                issued: Mutex::new(issued),
                replica: Mutex::new(replica),
                queue: Mutex::new(Vec::new()),
                wake: Notify::new(),
                issued_wake: Notify::new(),
                changing: tokio::sync::Mutex::new(()),
                handed: Mutex::new((0, None)),
                prices: {
                    let p = ctx.setting::<price::Prices>().unwrap_or_default();
                    if !p.valid() {
                        return Err(failed(format!(
                            "a price above the most allowed ({} micro-credits per unit)",
                            price::MAX_PRICE
                        )));
                    }
                    p
                },
                price_lists: Mutex::new((HashMap::new(), None)),
                granted: Mutex::new(HashMap::new()),
                served: Mutex::new(HashMap::new()),
            }),
        };
        ledger.register();
        let tasks = ctx.tasks();
        let this = ledger.clone();
        tasks.spawn(async move { this.sequence_loop().await });
        let this = ledger.clone();
        tasks.spawn(async move { this.submit_loop().await });
        let this = ledger.clone();
        tasks.spawn(async move { this.follow_loop().await });
        let this = ledger.clone();
        tasks.spawn(async move { this.publish_prices().await });
        let this = ledger.clone();
        tasks.spawn(async move { this.transfer_loop().await });
        Ok(ledger)
    }
}

impl Ledger {
    /// The log's origin.
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    /// Sign and keep a receipt for work done for `account` at the request hashed as
    /// `request`; it reaches the log in the background.
    pub fn issue(
        &self,
        account: NodeId,
        request: ContentHash,
        work: Work,
    ) -> Result<Receipt, LedgerError> {
        let price = self.inner.prices.for_work(&work);
        let receipt = self.inner.issued.lock().issue(
            &self.inner.key,
            weft_net::now_ms(),
            account,
            request,
            work,
            price,
        )?;
        self.inner.issued_wake.notify_one();
        Ok(receipt)
    }

    /// Keep a proven wrong result in the table, where it counts against its offender's
    /// reputation (see [`fault`]); the offender.
    pub async fn report_fault(&self, fault: &Fault) -> Result<NodeId, fault::ReportError> {
        fault::report(&self.inner.table, &self.inner.key, fault).await
    }

    /// The proven wrong results of `node`.
    pub async fn faults_of(&self, node: &NodeId) -> Result<Vec<Fault>, MetaError> {
        fault::faults_of(&self.inner.table, node).await
    }

    /// Where the ledger stands here.
    pub fn status(&self) -> LedgerStatus {
        let replica = self.inner.replica.lock();
        let me = self.inner.key.public();
        LedgerStatus {
            origin: self.inner.origin.clone(),
            size: replica.size(),
            staged: replica.staged_size(),
            cosigned: replica
                .cosigned()
                .and_then(|n| replica::checkpoint_of(n).ok())
                .map(|(_, c)| c.size),
            issued: self.inner.issued.lock().count(),
            included: replica.receipts_of(&me),
            sequencer: self.designated(),
        }
    }

    /// The newest checkpoint this node knows cosigned by a quorum.
    pub fn checkpoint(&self) -> Option<String> {
        self.inner.replica.lock().cosigned().map(String::from)
    }

    /// Receipt `seq` of `node` with its inclusion proof against the newest cosigned
    /// checkpoint.
    pub fn prove(&self, node: &NodeId, seq: u64) -> Result<Included, LedgerError> {
        let mut replica = self.inner.replica.lock();
        let not_yet = || LedgerError::NotYet { node: *node, seq };
        let checkpoint = replica.cosigned().map(String::from).ok_or_else(not_yet)?;
        let (_, cp) = replica::checkpoint_of(&checkpoint)?;
        let index = replica.index_of(node, seq).ok_or_else(not_yet)?;
        if index >= cp.size {
            return Err(not_yet());
        }
        let receipt = replica.receipt(index)?;
        let proof = replica.inclusion_proof(index, cp.size)?;
        Ok(Included {
            receipt,
            index,
            proof,
            checkpoint,
        })
    }

    /// The size and tree hash this node's branch would have with `entries` appended, if each
    /// is a receipt next in its chain (nothing is written).
    pub fn preview(&self, entries: &[Vec<u8>]) -> Result<(u64, weft_tlog::Hash), LedgerError> {
        Ok(self.inner.replica.lock().preview(entries)?)
    }

    /// The tree hash of this node's copy at `size`.
    pub fn root_at(&self, size: u64) -> Result<weft_tlog::Hash, LedgerError> {
        Ok(self.inner.replica.lock().root_at(size)?)
    }

    /// Receipts of work done for `account` in the newest cosigned checkpoint, each with its
    /// inclusion proof: from the `skip`th on, at most `max`.
    pub fn receipts_for(
        &self,
        account: &NodeId,
        skip: usize,
        max: usize,
    ) -> Result<Vec<Included>, LedgerError> {
        let mut replica = self.inner.replica.lock();
        let Some(checkpoint) = replica.cosigned().map(String::from) else {
            return Ok(Vec::new());
        };
        let (_, cp) = replica::checkpoint_of(&checkpoint)?;
        let mut out = Vec::new();
        for index in replica.indices_for(account, cp.size, skip, max) {
            let receipt = replica.receipt(index)?;
            let proof = replica.inclusion_proof(index, cp.size)?;
            out.push(Included {
                receipt,
                index,
                proof,
                checkpoint: checkpoint.clone(),
            });
        }
        Ok(out)
    }

    /// What `node`'s receipts in the cosigned part of this copy add up to.
    pub fn work_done(&self, node: &NodeId) -> Result<WorkDone, LedgerError> {
        let mut replica = self.inner.replica.lock();
        let mut done = WorkDone {
            node: node.to_hex(),
            ..WorkDone::default()
        };
        let mut accounts = std::collections::HashSet::new();
        for seq in 0..replica.receipts_of(node) {
            let Some(index) = replica.index_of(node, seq) else {
                break;
            };
            let receipt = replica.receipt(index)?;
            done.receipts += 1;
            accounts.insert(receipt.body.account);
            let charge = receipt.charge();
            done.earned = done.earned.saturating_add(charge);
            match receipt.body.work {
                Work::Job {
                    fuel,
                    bytes_in,
                    bytes_out,
                    wall_ms,
                    ..
                } => {
                    done.jobs += 1;
                    done.earned_jobs = done.earned_jobs.saturating_add(charge);
                    done.fuel = done.fuel.saturating_add(fuel);
                    done.bytes_in = done.bytes_in.saturating_add(bytes_in);
                    done.bytes_out = done.bytes_out.saturating_add(bytes_out);
                    done.wall_ms = done.wall_ms.saturating_add(wall_ms);
                }
                Work::Inference {
                    tokens_in,
                    tokens_out,
                    ..
                } => {
                    done.requests += 1;
                    done.earned_inference = done.earned_inference.saturating_add(charge);
                    done.tokens_in = done.tokens_in.saturating_add(tokens_in);
                    done.tokens_out = done.tokens_out.saturating_add(tokens_out);
                }
                Work::Storage { byte_hours, .. } => {
                    done.byte_hours = done.byte_hours.saturating_add(byte_hours);
                    done.earned_storage = done.earned_storage.saturating_add(charge);
                }
                Work::Transfer { bytes } => {
                    done.bytes_served = done.bytes_served.saturating_add(bytes);
                    done.earned_transfer = done.earned_transfer.saturating_add(charge);
                }
            }
        }
        done.accounts = accounts.len() as u64;
        if *node == self.inner.key.public() {
            done.prices = Some(self.inner.prices);
        }
        Ok(done)
    }

    /// The consistency proof between two sizes of this node's copy.
    pub fn consistency(&self, old: u64, new: u64) -> Result<Vec<weft_tlog::Hash>, LedgerError> {
        let proof = self.inner.replica.lock().consistency_proof(old, new)?;
        Ok(proof)
    }

    /// `account`'s AI tokens in receipts issued in the last minute, as this copy has settled
    /// them (the figure a tokens-per-minute quota is held to).
    pub fn tokens_last_minute(&self, account: &NodeId) -> u64 {
        self.inner
            .replica
            .lock()
            .recent_tokens(account, weft_net::now_ms())
    }

    /// A tile or entry bundle of the settled (cosigned) log by its tlog-tiles path: what an
    /// auditor reads to walk the log.
    pub fn tile(&self, rel: &str) -> Result<Option<Vec<u8>>, LedgerError> {
        Ok(self.inner.replica.lock().read_tile(rel)?)
    }

    /// Walk this node's own copy up to its newest cosigned checkpoint, a bundle at a time
    /// (the copy is locked for one bundle's read, never for the walk): every entry a receipt
    /// its node signed, in its chain, hashing to the checkpoint's root. Blocking; the
    /// checkpoint walked to and what it held.
    pub fn walk(&self) -> Result<(String, audit::WalkSummary), LedgerError> {
        let note = self
            .inner
            .replica
            .lock()
            .cosigned()
            .map(String::from)
            .ok_or_else(|| LedgerError::Diverged("no cosigned checkpoint yet".into()))?;
        let (_, cp) = replica::checkpoint_of(&note)?;
        let summary = audit::walk_bundles(&cp, |rel| self.tile(rel).map_err(|e| e.to_string()))
            .map_err(LedgerError::Audit)?;
        Ok((note, summary))
    }

    /// The members whose cosignatures count and how many are needed, as this node sees the
    /// fabric: every member but `signer`, revoked and departed ones aside; more than half.
    fn witnesses(&self, signer: &NodeId) -> (Vec<NodeId>, usize) {
        let others: Vec<NodeId> = self
            .current_members()
            .into_iter()
            .filter(|id| id != signer)
            .collect();
        let quorum = quorum_of(others.len());
        (others, quorum)
    }

    /// Whether `note` is a checkpoint of this ledger signed by a member and cosigned by a
    /// quorum of the other members: its checkpoint if so.
    pub fn verify_checkpoint(&self, note: &str) -> Option<Checkpoint> {
        verify_checkpoint(note, &self.inner.origin, &self.current_members()).map(|v| v.checkpoint)
    }

    /// The members whose signatures count: revoked and departed ones aside.
    fn current_members(&self) -> Vec<NodeId> {
        self.inner
            .fabric
            .members()
            .into_iter()
            .filter(|m| !matches!(m.state, MemberState::Revoked | MemberState::Left))
            .map(|m| m.id)
            .collect()
    }

    /// The member receipts go to: the first live one in rendezvous order of the origin.
    pub fn designated(&self) -> Option<NodeId> {
        self.inner
            .fabric
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Alive)
            .map(|m| m.id)
            .min_by_key(|id| {
                let mut h = blake3::Hasher::new();
                h.update(self.inner.origin.as_bytes());
                h.update(&id.0);
                *h.finalize().as_bytes()
            })
    }

    fn register(&self) {
        let weak = Arc::downgrade(&self.inner);
        LEDGER_RPC.serve(&self.inner.endpoint, false, move |peer, ask| {
            let weak = weak.clone();
            async move {
                let Some(inner) = weak.upgrade() else {
                    return LedgerAnswer::Refused("the node is stopping".into());
                };
                let weft_net::Peer::Member(peer) = peer else {
                    return LedgerAnswer::Refused("the ledger is between members".into());
                };
                Ledger { inner }.answer(peer.id, ask).await
            }
        });
    }

    async fn answer(&self, peer: NodeId, ask: LedgerAsk) -> LedgerAnswer {
        match ask {
            LedgerAsk::Submit(entries) => self.take(peer, entries),
            LedgerAsk::Settled(head) => {
                let _changing = self.inner.changing.lock().await;
                match self.settle_cosigned(&head).await {
                    Ok(()) => LedgerAnswer::Taken,
                    Err(e) => LedgerAnswer::Refused(e.to_string()),
                }
            }
            LedgerAsk::Cosign {
                note,
                batch,
                entries,
                prev,
                cosigned,
            } => match self
                .cosign(peer, &note, batch, entries, prev, cosigned)
                .await
            {
                Ok(sig) => LedgerAnswer::Cosigned(sig),
                Err(e) => LedgerAnswer::Refused(e.to_string()),
            },
        }
    }

    /// Receipts handed over by `peer`: queued if this node is the designated sequencer and
    /// every one is `peer`'s own and verifies.
    fn take(&self, peer: NodeId, entries: Vec<Vec<u8>>) -> LedgerAnswer {
        if self.designated() != Some(self.inner.key.public()) {
            return LedgerAnswer::NotSequencer;
        }
        if entries.len() > SUBMIT_MAX {
            return LedgerAnswer::Refused(format!("at most {SUBMIT_MAX} receipts at once"));
        }
        let mut receipts = Vec::with_capacity(entries.len());
        for entry in &entries {
            match Receipt::from_entry(entry) {
                Ok(r) if r.body.node == peer => receipts.push(r),
                Ok(_) => {
                    return LedgerAnswer::Refused("a node hands over only its own receipts".into());
                }
                Err(e) => return LedgerAnswer::Refused(e.to_string()),
            }
        }
        let mut queue = self.inner.queue.lock();
        if queue.len() + receipts.len() > QUEUE_MAX {
            return LedgerAnswer::Refused("the sequencer's queue is full; try again".into());
        }
        queue.extend(receipts);
        drop(queue);
        self.inner.wake.notify_waiters();
        LedgerAnswer::Taken
    }

    async fn submit_loop(&self) {
        loop {
            tokio::select! {
                _ = self.inner.issued_wake.notified() => {}
                _ = tokio::time::sleep(SUBMIT_EVERY) => {}
            }
            if let Err(e) = self.submit_once().await {
                tracing::debug!("ledger: handing receipts over: {e}");
            }
        }
    }

    /// Hand the sequencer this node's receipts the log does not hold yet.
    async fn submit_once(&self) -> Result<(), LedgerError> {
        let me = self.inner.key.public();
        let included = self.inner.replica.lock().settled_chains().next(&me).0;
        let issued = {
            let mut issued = self.inner.issued.lock();
            issued.flush()?;
            issued.written()
        };
        if included >= issued {
            return Ok(());
        }
        let from = {
            let handed = self.inner.handed.lock();
            match handed.1 {
                Some(at) if handed.0 > included && at.elapsed() < RESUBMIT_AFTER => handed.0,
                _ => included,
            }
        };
        if from >= issued {
            return Ok(());
        }
        let receipts = self.inner.issued.lock().from(from, SUBMIT_MAX)?;
        let Some(last) = receipts.last().map(|r| r.body.seq) else {
            return Ok(());
        };
        let Some(sequencer) = self.designated() else {
            return Ok(());
        };
        if sequencer == me {
            let mut queue = self.inner.queue.lock();
            if queue.len() + receipts.len() <= QUEUE_MAX {
                queue.extend(receipts);
            }
            drop(queue);
            self.inner.wake.notify_waiters();
        } else {
            let addr = self
                .inner
                .fabric
                .member(&sequencer)
                .and_then(|m| m.addr)
                .ok_or_else(|| LedgerError::Diverged("the sequencer has no address".into()))?;
            let entries = receipts.iter().map(Receipt::to_entry).collect();
            match LEDGER_RPC
                .call(
                    &self.inner.endpoint,
                    sequencer,
                    addr,
                    &LedgerAsk::Submit(entries),
                )
                .await
            {
                Ok(LedgerAnswer::Taken) => {}
                Ok(other) => {
                    tracing::debug!("ledger: sequencer {sequencer} answered {other:?}");
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!("ledger: sequencer {sequencer}: {e}");
                    return Ok(());
                }
            }
        }
        *self.inner.handed.lock() = (last + 1, Some(Instant::now()));
        Ok(())
    }

    async fn sequence_loop(&self) {
        let mut regathered = Instant::now();
        loop {
            if self.inner.queue.lock().is_empty() {
                tokio::select! {
                    _ = self.inner.wake.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            if self.inner.queue.lock().is_empty() {
                if regathered.elapsed() >= REGATHER_EVERY
                    && self.designated() == Some(self.inner.key.public())
                {
                    regathered = Instant::now();
                    if let Err(e) = self.regather().await {
                        tracing::debug!("ledger: asking again for cosignatures: {e}");
                    }
                }
                continue;
            }
            if self.designated() != Some(self.inner.key.public()) {
                // Handed receipts while another member sequences: they go back to their
                // nodes' hand-over (which finds the sequencer again).
                self.inner.queue.lock().clear();
                continue;
            }
            match self.round().await {
                Ok(true) => {}
                // Only receipts waiting for ones before them: wait for those, do not spin.
                Ok(false) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => {
                    tracing::warn!("ledger: sequencing: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Ask the witnesses again for the head when it lacks a quorum: this node's copy staged it
    /// but did not settle it (a round whose witnesses did not all answer), or the newest
    /// cosigned checkpoint no longer has enough cosignatures for the members there are now (a
    /// member that was away came back, so the quorum grew). Without this, the receipts of that
    /// batch would wait for the next batch, and a node handing them again is told they are in.
    async fn regather(&self) -> Result<(), LedgerError> {
        let _changing = self.inner.changing.lock().await;
        let Some(head) = self
            .inner
            .table
            .get_value::<Heads>(&(), schema::HEAD)
            .await?
        else {
            return Ok(());
        };
        let end = head.batch.first + head.batch.count;
        let (staged, settled) = {
            let replica = self.inner.replica.lock();
            (replica.staged_size(), replica.size())
        };
        let unsettled = staged > settled && staged == end;
        let short = !unsettled && settled == end && {
            let cosigned = self
                .inner
                .table
                .get_value::<Heads>(&(), schema::COSIGNED)
                .await?;
            cosigned
                .is_some_and(|c| c.batch == head.batch && self.verify_checkpoint(&c.note).is_none())
        };
        if !unsettled && !short {
            return Ok(());
        }
        let (part, sort) = schema::batch_key(&head.batch);
        let Some(batch) = self
            .inner
            .table
            .get_value::<Batches>(&part, sort.as_str())
            .await?
        else {
            return Ok(());
        };
        let note = Note::parse(&head.note).map_err(|e| LedgerError::Diverged(e.to_string()))?;
        self.gather(note, batch, head.batch).await
    }

    /// One round as sequencer: bring the staged branch to the head, append what is queued,
    /// replace the head by a conditional write, then gather cosignatures. Whether it appended
    /// anything.
    async fn round(&self) -> Result<bool, LedgerError> {
        let _changing = self.inner.changing.lock().await;
        self.drop_revoked()?;
        let head = self
            .inner
            .table
            .get_value::<Heads>(&(), schema::HEAD)
            .await?;
        let mut bad_head = None;
        if let Some(head) = &head {
            match self.stage_to(head).await {
                Ok(()) => {}
                Err(LedgerError::Meta(e)) => return Err(e.into()),
                Err(e) => {
                    // A head this node cannot take (forged, or of another branch): replaced
                    // below, from this node's own branch.
                    tracing::warn!("ledger: the head row does not extend this node's copy: {e}");
                    bad_head = Some(head.note.clone());
                }
            }
        }
        let mut queue = std::mem::take(&mut *self.inner.queue.lock());
        queue.sort_by_key(|r| (r.body.node, r.body.seq));
        queue.dedup_by_key(|r| (r.body.node, r.body.seq));
        let (entries, keep) = {
            let replica = self.inner.replica.lock();
            let mut chains = replica.chains().clone();
            let (mut entries, mut keep) = (Vec::new(), Vec::new());
            for r in queue {
                if entries.len() >= BATCH_MAX {
                    keep.push(r);
                    continue;
                }
                match chains.check(&r) {
                    Ok(()) => {
                        chains.advance(&r);
                        entries.push(r.to_entry());
                    }
                    Err(receipt::ChainError::Gap { .. }) => keep.push(r),
                    Err(_) => {}
                }
            }
            (entries, keep)
        };
        self.inner.queue.lock().extend(keep);
        if entries.is_empty() {
            return Ok(false);
        }
        let (old, prev, size, root) = {
            let replica = self.inner.replica.lock();
            let (size, root) = replica.preview(&entries)?;
            (replica.staged_size(), replica.last_batch(), size, root)
        };
        let me = self.inner.key.public();
        let batch = Batch {
            first: old,
            maker: me,
            entries,
            prev,
        };
        let reference = batch.reference();
        let checkpoint = Checkpoint {
            origin: self.inner.origin.clone(),
            size,
            root,
            extensions: vec![],
        };
        let note = match self
            .commit(&batch, reference, &checkpoint, bad_head)
            .await?
        {
            Some(note) => note,
            None => {
                // Someone else's head stands: the receipts wait for the next round.
                let receipts = batch
                    .entries
                    .iter()
                    .filter_map(|e| Receipt::from_entry(e).ok());
                self.inner.queue.lock().extend(receipts);
                return Ok(true);
            }
        };
        self.inner
            .replica
            .lock()
            .stage(&batch.entries, &checkpoint, reference, me)?;
        self.gather(note, batch, reference).await?;
        Ok(true)
    }

    /// Write the batch row and replace the head (if it is still the one this node's branch
    /// holds, or one it could not take); the sequencer's note if the head was replaced.
    async fn commit(
        &self,
        batch: &Batch,
        reference: BatchRef,
        checkpoint: &Checkpoint,
        bad_head: Option<String>,
    ) -> Result<Option<Note>, LedgerError> {
        let (part, sort) = schema::batch_key(&reference);
        match self
            .inner
            .table
            .create::<Batches>(&self.inner.key, &part, sort.as_str(), batch)
            .await
        {
            Ok(_) | Err(MetaError::Conflict) => {}
            Err(e) => return Err(e.into()),
        }
        let note = self
            .inner
            .signer
            .sign(&checkpoint.text())
            .map_err(|e| LedgerError::Diverged(e.to_string()))?;
        let head = Head {
            note: note.encode(),
            batch: reference,
        };
        let written = self
            .inner
            .table
            .update::<Heads>(&self.inner.key, &(), schema::HEAD, |current| {
                let replaceable = match &current {
                    None => true,
                    Some(cur) if Some(&cur.note) == bad_head.as_ref() => true,
                    // The head must be on this node's branch: at its end, or (rolled back by
                    // someone) before it.
                    Some(cur) => replica::checkpoint_of(&cur.note).is_ok_and(|(_, c)| {
                        c.size <= batch.first
                            && self.inner.replica.lock().holds(&c).unwrap_or(false)
                    }),
                };
                replaceable.then(|| Some(head.clone()))
            })
            .await?;
        Ok(written.map(|_| note))
    }

    /// Ask every other member to cosign `note`; once a quorum did, settle the checkpoint and
    /// publish it cosigned.
    async fn gather(
        &self,
        mut note: Note,
        batch: Batch,
        reference: BatchRef,
    ) -> Result<(), LedgerError> {
        let me = self.inner.key.public();
        let (witnesses, quorum) = self.witnesses(&me);
        let cosigned = self.settled_head();
        let ask = LedgerAsk::Cosign {
            note: note.encode(),
            batch: reference,
            entries: batch.entries,
            prev: batch.prev,
            cosigned,
        };
        let mut calls = tokio::task::JoinSet::new();
        for id in witnesses {
            let Some(addr) = self.inner.fabric.member(&id).and_then(|m| m.addr) else {
                continue;
            };
            let (endpoint, ask) = (self.inner.endpoint.clone(), ask.clone());
            calls.spawn(async move { (id, LEDGER_RPC.call(&endpoint, id, addr, &ask).await) });
        }
        let mut got = 0;
        while got < quorum {
            let Some(done) = calls.join_next().await else {
                break;
            };
            match done {
                Ok((id, Ok(LedgerAnswer::Cosigned(sig)))) => {
                    let verifier = verifier(&id);
                    let mut with = note.clone();
                    with.add(sig.clone());
                    if with.cosigned_by(&verifier).is_some() {
                        note = with;
                        got += 1;
                    }
                }
                Ok((id, Ok(other))) => tracing::debug!("ledger: witness {id}: {other:?}"),
                Ok((id, Err(e))) => tracing::debug!("ledger: witness {id}: {e}"),
                Err(_) => {}
            }
        }
        // The rest finish in the background; their cosignatures are not needed.
        calls.detach_all();
        if got < quorum {
            return Err(LedgerError::Diverged(format!(
                "{got} of the {quorum} cosignatures needed"
            )));
        }
        self.inner.replica.lock().settle(&note)?;
        let head = Head {
            note: note.encode(),
            batch: reference,
        };
        // Every member settles it now rather than at its next look.
        for id in self.witnesses(&me).0 {
            let Some(addr) = self.inner.fabric.member(&id).and_then(|m| m.addr) else {
                continue;
            };
            let (endpoint, ask) = (
                self.inner.endpoint.clone(),
                LedgerAsk::Settled(head.clone()),
            );
            self.inner.tasks.spawn(async move {
                let _ = LEDGER_RPC.call(&endpoint, id, addr, &ask).await;
            });
        }
        self.inner
            .table
            .put::<Heads>(&self.inner.key, &(), schema::COSIGNED, Some(&head))
            .await?;
        Ok(())
    }

    /// The settled checkpoint with the batch that ends at it.
    fn settled_head(&self) -> Option<Head> {
        let replica = self.inner.replica.lock();
        let note = replica.cosigned()?.to_string();
        let (_, checkpoint) = replica::checkpoint_of(&note).ok()?;
        let batch = replica_settled_batch(&replica, checkpoint.size)?;
        Some(Head { note, batch })
    }

    /// As a witness: bring the staged branch to `note`'s tree (by the entries sent, or by the
    /// table), check it keeps this node's commitment, then cosign it.
    async fn cosign(
        &self,
        peer: NodeId,
        note: &str,
        batch: BatchRef,
        entries: Vec<Vec<u8>>,
        prev: Option<BatchRef>,
        cosigned: Option<Head>,
    ) -> Result<NoteSignature, LedgerError> {
        let (parsed, checkpoint) = replica::checkpoint_of(note)?;
        if checkpoint.origin != self.inner.origin {
            return Err(LedgerError::Diverged("another log's checkpoint".into()));
        }
        if !parsed.signed_by(&verifier(&peer)) {
            return Err(LedgerError::Diverged(
                "the checkpoint is not signed by the asker".into(),
            ));
        }
        let _changing = self.inner.changing.lock().await;
        if let Some(head) = cosigned
            && let Err(e) = self.settle_cosigned(&head).await
        {
            tracing::debug!("ledger: the cosigned checkpoint sent along: {e}");
        }
        self.drop_revoked()?;
        let sent = Batch {
            first: batch.first,
            maker: peer,
            entries,
            prev,
        };
        let (staged, last) = {
            let replica = self.inner.replica.lock();
            (replica.staged_size(), replica.last_batch())
        };
        if checkpoint.size > staged {
            if sent.reference() == batch
                && sent.prev == last
                && batch.first == staged
                && batch.first + batch.count == checkpoint.size
            {
                self.inner
                    .replica
                    .lock()
                    .stage(&sent.entries, &checkpoint, batch, peer)?;
            } else {
                self.stage_to(&Head {
                    note: note.to_string(),
                    batch,
                })
                .await?;
            }
        }
        let mut replica = self.inner.replica.lock();
        if !replica.holds(&checkpoint)? {
            return Err(LedgerError::Diverged(format!(
                "another tree of size {} than this node follows",
                checkpoint.size
            )));
        }
        if !replica.keeps_commitment(&checkpoint)? {
            return Err(LedgerError::Diverged(format!(
                "it does not extend the checkpoint this node cosigned: {}",
                replica.commitment().unwrap_or_default()
            )));
        }
        replica.commit(note)?;
        let secs = weft_net::now_ms() / 1000;
        self.inner
            .signer
            .cosignature(&parsed.text, secs)
            .map_err(|e| LedgerError::Diverged(e.to_string()))
    }

    /// The current member that signed `note`, if any (revoked members sign nothing).
    fn member_signer(&self, note: &Note) -> Option<NodeId> {
        self.inner
            .fabric
            .members()
            .into_iter()
            .filter(|m| m.state != MemberState::Revoked)
            .map(|m| m.id)
            .find(|id| note.signed_by(&verifier(id)))
    }

    /// Whether `node` is a current member (known, not revoked).
    fn is_member(&self, node: &NodeId) -> bool {
        self.inner
            .fabric
            .member(node)
            .is_some_and(|m| m.state != MemberState::Revoked)
    }

    /// Drop what a revoked member made: the staged branch from its first batch on (the whole
    /// staged branch: a log only goes back to its settled size), and the commitment if that
    /// member signed it or it lies beyond that batch. Cosigned history stays.
    fn drop_revoked(&self) -> Result<(), LedgerError> {
        let (void_from, commitment) = {
            let replica = self.inner.replica.lock();
            (
                replica.void_from(|maker| !self.is_member(maker)),
                replica.commitment().map(String::from),
            )
        };
        let committed = commitment.and_then(|c| replica::checkpoint_of(&c).ok());
        let signer_gone = committed
            .as_ref()
            .is_some_and(|(note, _)| self.member_signer(note).is_none());
        let mut replica = self.inner.replica.lock();
        if let Some(from) = void_from {
            replica.unstage()?;
            if committed.as_ref().is_some_and(|(_, c)| c.size > from) {
                replica.release_commitment()?;
            }
        }
        if signer_gone {
            replica.release_commitment()?;
            replica.unstage()?;
        }
        Ok(())
    }

    /// Bring the staged branch to `head`'s tree by the batch rows (walking back from its batch
    /// to the staged size), checking every entry; a head already on the branch changes
    /// nothing. A head of another branch is an error.
    async fn stage_to(&self, head: &Head) -> Result<(), LedgerError> {
        let (note, checkpoint) = replica::checkpoint_of(&head.note)?;
        if checkpoint.origin != self.inner.origin {
            return Err(LedgerError::Diverged("another log's checkpoint".into()));
        }
        let staged = {
            let mut replica = self.inner.replica.lock();
            if checkpoint.size <= replica.staged_size() {
                if replica.holds(&checkpoint)? {
                    return Ok(());
                }
                return Err(LedgerError::Diverged(format!(
                    "another tree of size {}",
                    checkpoint.size
                )));
            }
            replica.staged_size()
        };
        if self.member_signer(&note).is_none() {
            return Err(LedgerError::Diverged(
                "the checkpoint is not a member's".into(),
            ));
        }
        let mut batches = Vec::new();
        let mut at = head.batch;
        if at.first + at.count != checkpoint.size {
            return Err(LedgerError::Diverged(
                "the head's batch does not end at its size".into(),
            ));
        }
        loop {
            if batches.len() >= WALK_MAX || at.first < staged {
                return Err(LedgerError::Diverged(format!(
                    "the batches do not meet this node's branch at {staged}"
                )));
            }
            let (part, sort) = schema::batch_key(&at);
            let batch = self
                .inner
                .table
                .get_value::<Batches>(&part, sort.as_str())
                .await?
                .ok_or_else(|| LedgerError::Diverged(format!("batch {} is missing", at.first)))?;
            if batch.reference() != at {
                return Err(LedgerError::Diverged(format!(
                    "batch {} is not its name's",
                    at.first
                )));
            }
            if !self.is_member(&batch.maker) {
                return Err(LedgerError::Diverged(format!(
                    "batch {} was sequenced by {}, not a member",
                    at.first, batch.maker
                )));
            }
            let (prev, first) = (batch.prev, batch.first);
            batches.push((at, batch));
            if first == staged {
                break;
            }
            at = prev.ok_or_else(|| LedgerError::Diverged("the batches end early".into()))?;
            if at.first + at.count != first {
                return Err(LedgerError::Diverged(
                    "the batches are not contiguous".into(),
                ));
            }
        }
        // The branch must continue from the batch this node's branch ends with.
        let last = self.inner.replica.lock().last_batch();
        if batches.last().and_then(|(_, b)| b.prev) != last {
            return Err(LedgerError::Diverged(
                "the batches continue another branch".into(),
            ));
        }
        batches.reverse();
        let mut replica = self.inner.replica.lock();
        let mut entries = Vec::new();
        let mut refs = Vec::new();
        for (reference, batch) in batches {
            refs.push((reference, batch.maker));
            entries.extend(batch.entries);
        }
        replica.stage_all(&entries, &checkpoint, &refs)?;
        Ok(())
    }

    /// Settle `head`'s checkpoint if a quorum cosigned it: staged to first (dropping a staged
    /// branch it is not on), then settled; a commitment it does not keep is given up.
    async fn settle_cosigned(&self, head: &Head) -> Result<(), LedgerError> {
        let checkpoint = self
            .verify_checkpoint(&head.note)
            .ok_or_else(|| LedgerError::Diverged("not cosigned by a quorum".into()))?;
        let (note, _) = replica::checkpoint_of(&head.note)?;
        if checkpoint.size <= self.inner.replica.lock().size() {
            return Ok(());
        }
        if let Err(e) = self.stage_to(head).await {
            if let LedgerError::Meta(e) = e {
                return Err(e.into());
            }
            // Another branch than the one staged: a quorum chose it, so it is the log.
            self.inner.replica.lock().unstage()?;
            self.stage_to(head).await?;
        }
        let mut replica = self.inner.replica.lock();
        if !replica.keeps_commitment(&checkpoint)? {
            replica.release_commitment()?;
        }
        replica.settle(&note)?;
        Ok(())
    }

    async fn follow_loop(&self) {
        loop {
            tokio::time::sleep(FOLLOW_EVERY).await;
            if let Err(e) = self.follow_cosigned().await {
                tracing::debug!("ledger: following: {e}");
            }
        }
    }

    /// Read the newest cosigned checkpoint and settle it.
    pub async fn follow_cosigned(&self) -> Result<(), LedgerError> {
        let Some(head) = self
            .inner
            .table
            .get_value::<Heads>(&(), schema::COSIGNED)
            .await?
        else {
            return Ok(());
        };
        let _changing = self.inner.changing.lock().await;
        self.settle_cosigned(&head).await
    }

    /// Wait until this node's receipts up to `seq` are in a cosigned checkpoint (tests,
    /// benches and commands that print proofs).
    pub async fn wait_included(&self, seq: u64, within: Duration) -> Result<Included, LedgerError> {
        let me = self.inner.key.public();
        let deadline = Instant::now() + within;
        loop {
            match self.prove(&me, seq) {
                Ok(included) => return Ok(included),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => {
                    let _ = self.follow_cosigned().await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// Receipts this node's copy holds of `node`.
    pub fn receipts_of(&self, node: &NodeId) -> u64 {
        self.inner.replica.lock().receipts_of(node)
    }

    /// The receipts queued at this node as sequencer, by issuer (for status).
    pub fn queued(&self) -> HashMap<NodeId, usize> {
        let mut out = HashMap::new();
        for r in self.inner.queue.lock().iter() {
            *out.entry(r.body.node).or_default() += 1;
        }
        out
    }
}
