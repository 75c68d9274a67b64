//! The replicated table: quorum writes and reads over the partition's replicas, read repair,
//! and periodic anti-entropy (digest comparison, then exchange of the differing partition).
//!
//! Every row version is signed by its writer and checked against its kind's [`Writer`] rule by
//! every replica that is asked to take it — on a write, a read repair or an anti-entropy
//! exchange — and by every reader that gets it from another node. The public interface is
//! typed by [`Schema`]s: callers never format keys or encode values themselves.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use weft_core::{NodeId, SecretKey, proto};
use weft_fabric::{Fabric, MemberState};
use weft_net::{Endpoint, Rpc};

use crate::hlc::{Hlc, Timestamp};
use crate::local::{Cond, Judge, LegacyEntry, LocalTable, PartitionTree, Seen};
use crate::ring::{
    PARTITIONS, Partition, Replica, placeable, regions_of, replicas_in, replicas_of_key,
};
use crate::row::{Entry, Item, Refusal, Rules, Signer, Writer};
use crate::schema::{Row, Schema, SortKey, Value, decode_row, encode_value, partition_key};

/// Replicas per partition.
pub const REPLICATION: usize = 3;
const MAX_FRAME: usize = 16 << 20;
/// The protocol between replicas (public so attack tests can speak it as a rogue member would).
pub const META: Rpc<MetaRequest, MetaResponse> =
    Rpc::new(proto::META, MAX_FRAME, MAX_FRAME, Duration::from_secs(5));
/// Attempts of an [`Table::update`] that keeps meeting concurrent writers.
const UPDATE_ATTEMPTS: usize = 10;

/// A request between replicas.
#[derive(Debug, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Merge these rows.
    Write(Vec<Item>),
    /// Merge this row if the replica's version meets the condition.
    WriteIf(Box<Item>, Cond),
    /// One row.
    Read {
        /// Partition key.
        pk: String,
        /// Sort key.
        sk: String,
    },
    /// Rows of `pk` with a sort-key prefix.
    List {
        /// Partition key.
        pk: String,
        /// Prefix.
        prefix: String,
    },
    /// The Merkle tree of a partition.
    Tree(Partition),
    /// Rows of a partition in the leaves set in the mask.
    PullLeaves(Partition, u16),
    /// Rows stored before rows were signed whose partition key starts with this (migration).
    Legacy(String),
    /// Merge this row and answer the version it replaced ([`MetaResponse::Replaced`]).
    Swap(Box<Item>),
    /// Like [`MetaRequest::List`], answering only each row's version
    /// ([`MetaResponse::Digests`]): what a listing asks of all but the nearest replica.
    ListDigest {
        /// Partition key.
        pk: String,
        /// Prefix.
        prefix: String,
    },
}

/// One row's version, as a listing's farther replicas answer it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Digest {
    /// Sort key.
    pub sk: String,
    /// The version's timestamp.
    pub ts: Timestamp,
    /// Its signature (what breaks a timestamp tie).
    pub sig: weft_core::Signature,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum MetaResponse {
    /// Rows merged.
    Written,
    /// A row (if any).
    Entry(Option<Entry>),
    /// Rows.
    Items(Vec<Item>),
    /// A Merkle tree.
    Tree(PartitionTree),
    /// Refused.
    Error(String),
    /// A conditional write whose condition failed: the replica's version.
    Conflict(Option<Entry>),
    /// Unsigned rows from before rows were signed: (partition key, sort key, entry).
    Legacy(Vec<(String, String, LegacyEntry)>),
    /// A [`MetaRequest::Swap`] merged: the version it replaced here, if any.
    Replaced(Option<Entry>),
    /// The versions a [`MetaRequest::ListDigest`] asked for.
    Digests(Vec<Digest>),
}

/// Table failures.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    /// Too few replicas answered.
    #[error("metadata quorum not reached: {got} of {needed} replicas answered ({last})")]
    Quorum {
        /// Answers.
        got: usize,
        /// Needed.
        needed: usize,
        /// Last failure.
        last: String,
    },
    /// A conditional write found the row changed (or present, for create-if-absent).
    #[error("the row was written concurrently (or already exists)")]
    Conflict,
    /// This node may not write the row (it would be refused by every replica).
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// A row this node cannot read (a newer format, or corrupt): nothing was changed.
    #[error("row {what} cannot be read here: {why}")]
    Unreadable {
        /// Which row.
        what: String,
        /// Why.
        why: String,
    },
    /// Local store failure.
    #[error(transparent)]
    Local(#[from] crate::local::LocalError),
}

/// The table, as seen from one node.
#[derive(Clone)]
pub struct Table {
    endpoint: Endpoint,
    fabric: Fabric,
    local: Arc<LocalTable>,
    hlc: Arc<Mutex<Hlc>>,
    key: SecretKey,
    rules: Arc<Rules>,
}

impl Table {
    /// Serve this node's replica (checking every row against `rules`) and start anti-entropy
    /// every `interval`. `key` is the node key, which signs node-owned rows.
    pub fn start(
        endpoint: Endpoint,
        fabric: Fabric,
        local: Arc<LocalTable>,
        key: SecretKey,
        rules: Rules,
        interval: Duration,
    ) -> Table {
        let table = Table {
            hlc: Arc::new(Mutex::new(Hlc::new(fabric.id()))),
            endpoint,
            fabric,
            local,
            key,
            rules: Arc::new(rules),
        };
        let server = table.clone();
        META.serve(&table.endpoint, false, move |_peer, req| {
            let table = server.clone();
            async move { table.answer(req).await }
        });
        table.endpoint.spawn(table.clone().anti_entropy(interval));
        table
    }

    /// The node key (signs node-owned rows: catalog entries, audit tallies).
    pub fn node_key(&self) -> &SecretKey {
        &self.key
    }

    /// The writer rules this node enforces.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    fn admit_fn(&self) -> Checker {
        Checker {
            rules: self.rules.clone(),
            fabric: self.fabric.clone(),
            trust: self.endpoint.trust().clone(),
            fresh_at: None,
        }
    }

    /// The check for rows written to this replica at `now` (see [`Checker::fresh_at`]).
    fn write_check(&self, now: u64) -> Checker {
        Checker {
            fresh_at: Some(now),
            ..self.admit_fn()
        }
    }

    /// Check a row another node served (its signature and writer rule).
    fn verified(&self, item: &Item) -> bool {
        match self.admit_fn().admit(item, None) {
            Ok(()) => true,
            Err(r) => {
                tracing::warn!(refusal = %r, "a replica served a row that does not verify; ignored");
                false
            }
        }
    }

    async fn answer(&self, req: MetaRequest) -> MetaResponse {
        let local = self.local.clone();
        let now = weft_net::now_ms();
        let incoming: Vec<&Item> = match &req {
            MetaRequest::Write(items) => items.iter().collect(),
            MetaRequest::WriteIf(item, _) | MetaRequest::Swap(item) => vec![&**item],
            _ => Vec::new(),
        };
        {
            let mut hlc = self.hlc.lock();
            for i in &incoming {
                if hlc.observe(i.entry.ts, now).is_err() {
                    return MetaResponse::Error("timestamp too far in the future".into());
                }
            }
        }
        // A name belongs to whoever its replicas say: a claim sent to any other node would sit
        // there unread until the ring moved that node in, and then compete with the true
        // holder's claim. Only a name's replicas take claims.
        let me = self.fabric.id();
        if let Some(i) = incoming.iter().find(|i| {
            self.rules.writer(crate::row::kind_of(&i.pk)) == Some(Writer::FirstClaim)
                && !self.replicas_of_key(&i.pk).contains(&me)
        }) {
            return MetaResponse::Error(format!(
                "not a replica of {}: a name claim goes to the name's replicas",
                i.pk
            ));
        }
        // Rows held to regions live only on nodes in them: a replica elsewhere takes none.
        if let Some(i) = incoming.iter().find(|i| !self.holds_here(&i.pk)) {
            return MetaResponse::Error(format!("{} is held to regions this node is not in", i.pk));
        }
        let admit = self.write_check(now);
        let result = tokio::task::spawn_blocking(move || match req {
            MetaRequest::Write(items) => local.merge(&items, &admit).map(|m| {
                if m.refused.is_empty() {
                    MetaResponse::Written
                } else {
                    for r in &m.refused {
                        // A stale delegated row is mostly read repair handing on a row
                        // this replica missed: anti-entropy's vouched pull brings it.
                        if matches!(r, Refusal::Stale { .. }) {
                            tracing::debug!(refusal = %r, "metadata row refused");
                        } else {
                            tracing::warn!(refusal = %r, "metadata row refused");
                        }
                    }
                    MetaResponse::Error(format!(
                        "{} of {} rows refused: {}",
                        m.refused.len(),
                        items.len(),
                        m.refused[0]
                    ))
                }
            }),
            MetaRequest::WriteIf(item, cond) => {
                local.merge_if(&item, cond, &admit).map(|r| match r {
                    Ok(()) => MetaResponse::Written,
                    Err(current) => MetaResponse::Conflict(current),
                })
            }
            MetaRequest::Swap(item) => local.merge_returning(&item, &admit).map(|r| match r {
                Ok(replaced) => MetaResponse::Replaced(replaced),
                Err(refusal) => {
                    tracing::warn!(%refusal, "metadata row refused");
                    MetaResponse::Error(format!("1 of 1 rows refused: {refusal}"))
                }
            }),
            MetaRequest::Read { pk, sk } => local.get(&pk, &sk).map(MetaResponse::Entry),
            MetaRequest::List { pk, prefix } => local.list(&pk, &prefix).map(MetaResponse::Items),
            MetaRequest::ListDigest { pk, prefix } => local.list(&pk, &prefix).map(|items| {
                MetaResponse::Digests(
                    items
                        .into_iter()
                        .map(|i| Digest {
                            sk: i.sk,
                            ts: i.entry.ts,
                            sig: i.entry.sig,
                        })
                        .collect(),
                )
            }),
            MetaRequest::Tree(p) => local.tree(p).map(MetaResponse::Tree),
            MetaRequest::PullLeaves(p, mask) => local.leaves(p, mask).map(MetaResponse::Items),
            MetaRequest::Legacy(prefix) => local.legacy().map(|rows| {
                MetaResponse::Legacy(
                    rows.into_iter()
                        .filter(|(pk, _, _)| pk.starts_with(&prefix))
                        .collect(),
                )
            }),
        })
        .await;
        match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => MetaResponse::Error(e.to_string()),
            Err(e) => MetaResponse::Error(e.to_string()),
        }
    }

    /// This node's own replica.
    pub fn local(&self) -> &LocalTable {
        &self.local
    }

    fn ring(&self) -> Vec<Replica> {
        self.fabric
            .members()
            .into_iter()
            .filter(|m| m.in_ring())
            .map(|m| Replica {
                id: m.id,
                site: m.placement.site,
                region: m.placement.region,
            })
            .collect()
    }

    /// Whether this node hears most of the fabric: the members it counts in the ring (alive, or
    /// only suspected) are more than half of those not gone for good (left or revoked). A node
    /// cut off from the rest soon counts the others dead and would find every replica set it
    /// computes within its reach; what authorizes requests must not be read that way (a key
    /// or grant revoked on the other side would still be served), so such reads call this
    /// first and fail closed. Dead members count until the admin revokes them.
    pub fn hears_majority(&self) -> Result<(), MetaError> {
        let members = self.fabric.members();
        let counted = members
            .iter()
            .filter(|m| !matches!(m.state, MemberState::Left | MemberState::Revoked))
            .count();
        let heard = members.iter().filter(|m| m.in_ring()).count();
        if heard * 2 > counted {
            return Ok(());
        }
        Err(MetaError::Quorum {
            got: heard,
            needed: counted / 2 + 1,
            last: "this node hears fewer than half of the fabric's members, so it authorizes \
                   nothing from what it knows"
                .into(),
        })
    }

    /// Current replicas of a partition of rows that may live anywhere, among live members.
    pub fn replicas_of(&self, partition: Partition) -> Vec<NodeId> {
        replicas_in(partition, &self.ring(), REPLICATION, None)
    }

    /// Current replicas of the rows of partition key `pk`: among members in its regions only,
    /// if it is held to regions ([`crate::ring`]).
    pub fn replicas_of_key(&self, pk: &str) -> Vec<NodeId> {
        replicas_of_key(pk, &self.ring(), REPLICATION)
    }

    /// Current replicas of the partition that holds `part`'s rows of `S`.
    pub fn replicas_for<S: Schema>(&self, part: &S::Part) -> Vec<NodeId> {
        self.replicas_of_key(&partition_key::<S>(part))
    }

    /// Whether this node may hold the rows of `pk` (it is in their regions, if any).
    fn holds_here(&self, pk: &str) -> bool {
        let region = self
            .fabric
            .member(&self.fabric.id())
            .map(|m| m.placement.region);
        region.is_some_and(|r| placeable(pk, &r))
    }

    async fn call(&self, node: NodeId, req: MetaRequest) -> Result<MetaResponse, String> {
        self.call_checked(node, req, true).await
    }

    /// Ask `node`; with `checked`, rows another node served that do not verify are left out
    /// (without, every row comes back as served, for callers that check rows themselves).
    async fn call_checked(
        &self,
        node: NodeId,
        req: MetaRequest,
        checked: bool,
    ) -> Result<MetaResponse, String> {
        if node == self.fabric.id() {
            return match self.answer(req).await {
                MetaResponse::Error(e) => Err(e),
                r => Ok(r),
            };
        }
        let addr = self
            .fabric
            .record(&node)
            .map(|r| r.body.addr)
            .ok_or("no address known")?;
        let resp = match META.call(&self.endpoint, node, addr, &req).await {
            Ok(MetaResponse::Error(e)) => return Err(e),
            Ok(r) => r,
            Err(e) => return Err(e.to_string()),
        };
        if !checked {
            return Ok(resp);
        }
        // Rows served by another node are checked like rows written to this one.
        Ok(match (resp, &req) {
            (MetaResponse::Entry(Some(e)), MetaRequest::Read { pk, sk }) => {
                let item = Item {
                    pk: pk.clone(),
                    sk: sk.clone(),
                    entry: e,
                };
                MetaResponse::Entry(self.verified(&item).then_some(item.entry))
            }
            (MetaResponse::Items(items), _) => {
                MetaResponse::Items(items.into_iter().filter(|i| self.verified(i)).collect())
            }
            (r, _) => r,
        })
    }

    /// Ask every replica of `pk`'s partition; return once a majority answered. With `relaxed`,
    /// wait for every replica to answer or fail, and accept any number of answers but zero.
    async fn gather(
        &self,
        pk: &str,
        req: impl Fn() -> MetaRequest,
        relaxed: bool,
    ) -> Result<Vec<(NodeId, MetaResponse)>, MetaError> {
        self.gather_checked(pk, req, relaxed, true).await
    }

    /// [`Table::gather`], the rows checked or not (see [`Table::call_checked`]).
    async fn gather_checked(
        &self,
        pk: &str,
        req: impl Fn() -> MetaRequest,
        relaxed: bool,
        checked: bool,
    ) -> Result<Vec<(NodeId, MetaResponse)>, MetaError> {
        let targets = self.replicas_of_key(pk);
        if targets.is_empty() {
            return Err(MetaError::Quorum {
                got: 0,
                needed: 1,
                last: match regions_of(pk) {
                    Ok(Some(regions)) => format!("no member in regions {}", regions.join(", ")),
                    Ok(None) => "no members".into(),
                    Err(e) => e,
                },
            });
        }
        let needed = targets.len() / 2 + 1;
        let mut tasks = JoinSet::new();
        for node in targets.iter().copied() {
            let (this, r) = (self.clone(), req());
            tasks.spawn(async move { (node, this.call_checked(node, r, checked).await) });
        }
        let mut answers = Vec::new();
        let mut last = String::from("no replicas alive");
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((node, Ok(resp))) => {
                    answers.push((node, resp));
                    if answers.len() >= needed && !relaxed {
                        // The rest finish in the background (their writes still land).
                        tasks.detach_all();
                        return Ok(answers);
                    }
                }
                Ok((node, Err(e))) => last = format!("{node}: {e}"),
                Err(e) => last = e.to_string(),
            }
        }
        if relaxed && !answers.is_empty() {
            return Ok(answers);
        }
        Err(MetaError::Quorum {
            got: answers.len(),
            needed,
            last,
        })
    }

    fn sign(&self, by: &Signer, pk: String, sk: String, value: Option<Vec<u8>>) -> Item {
        let ts = self.hlc.lock().now(weft_net::now_ms());
        let entry = Entry::sign(by, &pk, &sk, ts, value);
        Item { pk, sk, entry }
    }

    /// Refuse locally what every replica would refuse, with the reason.
    fn precheck(&self, item: &Item) -> Result<(), MetaError> {
        if self.rules.writer(crate::row::kind_of(&item.pk)) == Some(Writer::FirstClaim) {
            return Ok(()); // depends on the replicas' current versions
        }
        self.admit_fn()
            .admit(item, None)
            .map_err(MetaError::Refused)
    }

    /// For a name claim, attach the withdrawal it follows: the current version's if that is
    /// another key's deletion, or the one the current version carries if it is this key's.
    async fn with_prior(&self, mut item: Item) -> Result<Item, MetaError> {
        if self.rules.writer(crate::row::kind_of(&item.pk)) != Some(Writer::FirstClaim) {
            return Ok(item);
        }
        if let Some(cur) = self.read_raw(&item.pk, &item.sk, false).await? {
            item.entry.prior = if cur.author() == item.entry.author() {
                cur.prior
            } else if cur.is_tombstone() {
                Some(Box::new(Entry { prior: None, ..cur }))
            } else {
                None
            };
        }
        Ok(item)
    }

    async fn write(&self, item: Item) -> Result<Timestamp, MetaError> {
        self.precheck(&item)?;
        let item = self.with_prior(item).await?;
        let ts = item.entry.ts;
        let pk = item.pk.clone();
        self.gather(&pk, || MetaRequest::Write(vec![item.clone()]), false)
            .await?;
        Ok(ts)
    }

    /// Write a row of `S` signed by `by` (`None` deletes it). Durable on a majority of replicas
    /// when it returns.
    pub async fn put<S: Schema>(
        &self,
        by: impl Into<Signer>,
        part: &S::Part,
        sort: &S::Sort,
        value: Option<&S::Value>,
    ) -> Result<Timestamp, MetaError> {
        let item = self.sign(
            &by.into(),
            partition_key::<S>(part),
            sort.to_sort(),
            value.map(encode_value::<S>),
        );
        self.write(item).await
    }

    /// Write a row of `S` like [`Table::put`], and answer the live values it replaced on the
    /// replicas that took it, newest first, each once: what an overwrite lets go of, learnt in
    /// the write's own round trip. Only versions older than the write count (a replica cannot
    /// make the writer let go of a newer one), and only those that verify; a value this node
    /// cannot read is left out (so it is kept, never let go of).
    pub async fn put_returning<S: Schema>(
        &self,
        by: impl Into<Signer>,
        part: &S::Part,
        sort: &S::Sort,
        value: Option<&S::Value>,
    ) -> Result<(Timestamp, Vec<S::Value>), MetaError> {
        let item = self.sign(
            &by.into(),
            partition_key::<S>(part),
            sort.to_sort(),
            value.map(encode_value::<S>),
        );
        self.precheck(&item)?;
        let item = self.with_prior(item).await?;
        let ts = item.entry.ts;
        let answers = self
            .gather(
                &item.pk,
                || MetaRequest::Swap(Box::new(item.clone())),
                false,
            )
            .await?;
        let mut replaced: Vec<Entry> = answers
            .into_iter()
            .filter_map(|(_, r)| match r {
                MetaResponse::Replaced(Some(e)) if e.ts < ts => Some(e),
                _ => None,
            })
            .filter(|e| {
                self.verified(&Item {
                    pk: item.pk.clone(),
                    sk: item.sk.clone(),
                    entry: e.clone(),
                })
            })
            .collect();
        replaced.sort_by_key(|e| std::cmp::Reverse((e.ts, e.sig.0)));
        replaced.dedup_by(|a, b| a.ts == b.ts && a.sig == b.sig);
        Ok((
            ts,
            replaced
                .iter()
                .filter_map(|e| decode_row::<S>(e).known())
                .collect(),
        ))
    }

    /// Write an already encoded value (format byte first) of `S`: for tools and tests that
    /// write rows of other formats than this build's.
    pub async fn put_encoded<S: Schema>(
        &self,
        by: impl Into<Signer>,
        part: &S::Part,
        sort: &S::Sort,
        value: Option<Vec<u8>>,
    ) -> Result<Timestamp, MetaError> {
        let item = self.sign(&by.into(), partition_key::<S>(part), sort.to_sort(), value);
        self.write(item).await
    }

    /// Write a row of `S` only if no live version exists (create-if-absent). A majority of
    /// replicas must agree; if the row exists, [`MetaError::Conflict`].
    pub async fn create<S: Schema>(
        &self,
        by: impl Into<Signer>,
        part: &S::Part,
        sort: &S::Sort,
        value: &S::Value,
    ) -> Result<Timestamp, MetaError> {
        let by: Signer = by.into();
        let (pk, sk) = (partition_key::<S>(part), sort.to_sort());
        let bytes = encode_value::<S>(value);
        for attempt in 0..UPDATE_ATTEMPTS {
            let item = self.sign(&by, pk.clone(), sk.clone(), Some(bytes.clone()));
            match self.write_if(&by, item, Cond::Absent).await {
                Err(MetaError::Conflict) => {
                    // Either the row exists, or concurrent creators split the replicas and
                    // withdrew: look, and try again after a random pause if it is still free.
                    let pause = rand::rng().random_range(10..60) * (attempt as u64 + 1);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    if self
                        .read_raw(&pk, &sk, false)
                        .await?
                        .is_some_and(|e| !e.is_tombstone())
                    {
                        return Err(MetaError::Conflict);
                    }
                }
                done => return done,
            }
        }
        Err(MetaError::Conflict)
    }

    /// A conditional write to every replica, done once a majority took it; on failure, a
    /// created row that a minority took is withdrawn again (best effort) so it does not linger
    /// as a rival claim.
    async fn write_if(&self, by: &Signer, item: Item, cond: Cond) -> Result<Timestamp, MetaError> {
        self.precheck(&item)?;
        let item = self.with_prior(item).await?;
        let targets = self.replicas_of_key(&item.pk);
        let needed = targets.len() / 2 + 1;
        let mut tasks = JoinSet::new();
        for node in targets.iter().copied() {
            let (this, req) = (
                self.clone(),
                MetaRequest::WriteIf(Box::new(item.clone()), cond),
            );
            tasks.spawn(async move { (node, this.call(node, req).await) });
        }
        let (mut accepted, mut conflicts, mut last) = (Vec::new(), 0, String::new());
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((node, Ok(MetaResponse::Written))) => {
                    accepted.push(node);
                    if accepted.len() >= needed {
                        // Committed: the rest finish in the background (a replica that refuses
                        // is brought up to date by read repair and anti-entropy).
                        tasks.detach_all();
                        return Ok(item.entry.ts);
                    }
                }
                Ok((_, Ok(MetaResponse::Conflict(_)))) => conflicts += 1,
                Ok((node, Ok(other))) => last = format!("{node}: unexpected answer {other:?}"),
                Ok((node, Err(e))) => last = format!("{node}: {e}"),
                Err(e) => last = e.to_string(),
            }
        }
        if accepted.len() >= needed {
            return Ok(item.entry.ts);
        }
        if cond == Cond::Absent && !accepted.is_empty() {
            let undo = self.sign(by, item.pk.clone(), item.sk.clone(), None);
            for node in accepted.iter().copied() {
                let _ = self
                    .call(node, MetaRequest::Write(vec![undo.clone()]))
                    .await;
            }
        }
        if conflicts > 0 {
            return Err(MetaError::Conflict);
        }
        Err(MetaError::Quorum {
            got: accepted.len(),
            needed,
            last,
        })
    }

    /// Read-modify-write one row of `S`: `change` gets the current value (`None` if there is
    /// none or it was deleted) and returns what to write (`Some(None)` deletes, `None` leaves
    /// the row alone). Versions that only some replicas hold are combined with
    /// [`Schema::join`] first; the write is conditional on nobody having written the row since,
    /// and retried (with `change` called again) when someone did. A current version this node
    /// cannot read fails with [`MetaError::Unreadable`] and changes nothing.
    pub async fn update<S: Schema>(
        &self,
        by: impl Into<Signer>,
        part: &S::Part,
        sort: &S::Sort,
        mut change: impl FnMut(Option<S::Value>) -> Option<Option<S::Value>>,
    ) -> Result<Option<Timestamp>, MetaError> {
        let by: Signer = by.into();
        let (pk, sk) = (partition_key::<S>(part), sort.to_sort());
        for attempt in 0..UPDATE_ATTEMPTS {
            let (versions, absent) = self.read_versions_seen(&pk, &sk).await?;
            let newest_ts = versions.iter().map(|e| e.ts).max();
            // Conditional on each replica still holding a version read here: a version
            // written since (even one older than the newest read) is not overwritten.
            let cond = Seen::of(versions.iter().map(|e| e.ts), absent)
                .map_or(Cond::NotNewerThan(newest_ts), Cond::Seen);
            let current = join_versions::<S>(&pk, &sk, versions)?;
            let Some(next) = change(current) else {
                return Ok(None);
            };
            if let Some(t) = newest_ts {
                self.hlc.lock().observe(t, weft_net::now_ms()).ok();
            }
            let item = self.sign(
                &by,
                pk.clone(),
                sk.clone(),
                next.as_ref().map(encode_value::<S>),
            );
            match self.write_if(&by, item, cond).await {
                Ok(ts) => return Ok(Some(ts)),
                Err(MetaError::Conflict) => {
                    // Random, growing pauses so writers that collided do not collide again.
                    let pause = rand::rng().random_range(5..20u64) << attempt.min(5);
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(MetaError::Conflict)
    }

    /// Like [`Table::read_versions`] from a majority, and whether some answering replica had
    /// no version at all.
    async fn read_versions_seen(
        &self,
        pk: &str,
        sk: &str,
    ) -> Result<(Vec<Entry>, bool), MetaError> {
        let mut absent = false;
        let versions = self.read_versions_with(pk, sk, false, &mut absent).await?;
        Ok((versions, absent))
    }

    /// Every version of one row that the answering replicas hold (a majority, or with
    /// `relaxed` whoever answers), repairing stale replicas with the newest.
    async fn read_versions(
        &self,
        pk: &str,
        sk: &str,
        relaxed: bool,
    ) -> Result<Vec<Entry>, MetaError> {
        self.read_versions_with(pk, sk, relaxed, &mut false).await
    }

    async fn read_versions_with(
        &self,
        pk: &str,
        sk: &str,
        relaxed: bool,
        absent: &mut bool,
    ) -> Result<Vec<Entry>, MetaError> {
        let mut relaxed = relaxed;
        let (entries, newest) = loop {
            let answers = self
                .gather(
                    pk,
                    || MetaRequest::Read {
                        pk: pk.into(),
                        sk: sk.into(),
                    },
                    relaxed,
                )
                .await?;
            let entries: Vec<(NodeId, Option<Entry>)> = answers
                .into_iter()
                .map(|(n, r)| match r {
                    MetaResponse::Entry(e) => (n, e),
                    _ => (n, None),
                })
                .collect();
            let held: Vec<(NodeId, Entry)> = entries
                .iter()
                .filter_map(|(n, e)| e.clone().map(|e| (*n, e)))
                .collect();
            match winner(&self.rules, pk, sk, &held) {
                // Claims that tie among a majority: every replica decides.
                Err(Tied) if !relaxed => relaxed = true,
                Err(Tied) => break (entries, None),
                Ok(v) => break (entries, v),
            }
        };
        *absent = entries.iter().any(|(_, e)| e.is_none());
        // Repair stale replicas only with a version a majority of all replicas holds (a
        // committed write). A newer version fewer hold may be what a conditional write that
        // lost its race left behind: written over the committed one, it would drop what that
        // one added (its writer's retry writes the combined value instead).
        let replicas = self.replicas_of_key(pk).len();
        let committed = newest.as_ref().filter(|best| {
            entries
                .iter()
                .filter(|(_, e)| e.as_ref() == Some(*best))
                .count()
                > replicas / 2
        });
        if let Some(best) = committed {
            for (node, e) in &entries {
                if e.as_ref()
                    .is_none_or(|e| self.rules.replaces(pk, sk, best, e))
                {
                    let (this, node) = (self.clone(), *node);
                    let item = Item {
                        pk: pk.into(),
                        sk: sk.into(),
                        entry: best.clone(),
                    };
                    self.endpoint.spawn(async move {
                        let _ = this.call(node, MetaRequest::Write(vec![item])).await;
                    });
                }
            }
        }
        let mut versions: Vec<Entry> = entries.into_iter().filter_map(|(_, e)| e).collect();
        versions.sort_by_key(|v| std::cmp::Reverse((v.ts, v.sig.0)));
        versions.dedup_by(|a, b| a.ts == b.ts && a.sig == b.sig);
        // The version that wins goes first (for name claims it need not be the newest).
        if let Some(best) = newest
            && let Some(i) = versions.iter().position(|v| *v == best)
        {
            let best = versions.remove(i);
            versions.insert(0, best);
        }
        Ok(versions)
    }

    async fn read_raw(
        &self,
        pk: &str,
        sk: &str,
        relaxed: bool,
    ) -> Result<Option<Entry>, MetaError> {
        Ok(self
            .read_versions(pk, sk, relaxed)
            .await?
            .into_iter()
            .next())
    }

    /// Read a row of `S` from a majority; the newest version wins and stale replicas are
    /// repaired. Deleted rows come back with `value: None`.
    pub async fn get<S: Schema>(
        &self,
        part: &S::Part,
        sort: &S::Sort,
    ) -> Result<Option<Row<S::Value>>, MetaError> {
        let e = self
            .read_raw(&partition_key::<S>(part), &sort.to_sort(), false)
            .await?;
        Ok(e.as_ref().map(decode_row::<S>))
    }

    /// The live value of a row of `S`, if any; a value this node cannot read is an error.
    pub async fn get_value<S: Schema>(
        &self,
        part: &S::Part,
        sort: &S::Sort,
    ) -> Result<Option<S::Value>, MetaError> {
        let pk = partition_key::<S>(part);
        let sk = sort.to_sort();
        match self.read_raw(&pk, &sk, false).await? {
            None => Ok(None),
            Some(e) => known_value::<S>(&pk, &sk, decode_row::<S>(&e)),
        }
    }

    /// Like [`Table::get`], but asks every replica and takes the newest answer of those that
    /// answered, however few: right after two of three replicas left, the remaining one may be
    /// the only node with the row (the new replicas get it by anti-entropy later). For hints
    /// where a possibly stale row beats none, such as where repaired shards went.
    pub async fn get_relaxed<S: Schema>(
        &self,
        part: &S::Part,
        sort: &S::Sort,
    ) -> Result<Option<Row<S::Value>>, MetaError> {
        let e = self
            .read_raw(&partition_key::<S>(part), &sort.to_sort(), true)
            .await?;
        Ok(e.as_ref().map(decode_row::<S>))
    }

    /// Live rows of `S` in partition `part` whose sort key starts with `prefix`, merged from a
    /// majority, in sort-key order.
    pub async fn list<S: Schema>(
        &self,
        part: &S::Part,
        prefix: &str,
    ) -> Result<Vec<(String, Row<S::Value>)>, MetaError> {
        Ok(self
            .list_all::<S>(part, prefix)
            .await?
            .into_iter()
            .filter(|(_, r)| r.value.is_some())
            .collect())
    }

    /// Live rows of `S` — a kind any member writes — in this replica's copy of `part`'s
    /// partition whose signatures hold but whose signer is no longer a member (revoked, or
    /// gone from the fabric). Such a row no longer verifies anywhere, so readers leave it out
    /// and deletions count it as unreadable; the member that can vouch for it now (the
    /// partition's owner, after checking what it can) writes it again under its own key.
    pub fn orphaned_rows<S: Schema>(&self, part: &S::Part) -> Vec<(String, S::Value)> {
        if self.rules.writer(S::KIND) != Some(Writer::Member) {
            return Vec::new();
        }
        let pk = partition_key::<S>(part);
        let Ok(items) = self.local.list(&pk, "") else {
            return Vec::new();
        };
        let check = self.admit_fn();
        items
            .into_iter()
            .filter(|i| {
                let e = &i.entry;
                e.value.is_some()
                    && e.via.is_none()
                    && !check.is_member(&e.signer)
                    && e.signature_ok(&i.pk, &i.sk)
            })
            .filter_map(|i| {
                let value = decode_row::<S>(&i.entry).known()?;
                Some((i.sk, value))
            })
            .collect()
    }

    /// Rows of `S` whose sort key starts with `prefix`, deletions included, for a decision
    /// that deletes data: merged from *every* replica (fails unless all of them answer), and
    /// every row checked here and now — also this node's own — so that a row that does not
    /// verify any more (its signer was revoked, its delegation no longer covers it) or never
    /// did (a replica forged it) comes back live and unreadable ([`Value::Corrupt`]), never
    /// left out: what cannot be verified must count as "cannot tell", not as "nothing there".
    pub async fn list_for_deletion<S: Schema>(
        &self,
        part: &S::Part,
        prefix: &str,
    ) -> Result<Vec<(String, Row<S::Value>)>, MetaError> {
        let pk = partition_key::<S>(part);
        let replicas = self.replicas_of_key(&pk).len();
        let answers = self
            .gather_checked(
                &pk,
                || MetaRequest::List {
                    pk: pk.clone(),
                    prefix: prefix.into(),
                },
                true,
                false,
            )
            .await?;
        if answers.len() < replicas {
            return Err(MetaError::Quorum {
                got: answers.len(),
                needed: replicas,
                last: "not every replica answered".into(),
            });
        }
        let check = self.admit_fn();
        let mut refused: std::collections::BTreeMap<String, (String, Entry)> = Default::default();
        let mut verified = Vec::with_capacity(answers.len());
        for (node, answer) in answers {
            let MetaResponse::Items(items) = answer else {
                continue;
            };
            let mut good = Vec::with_capacity(items.len());
            for i in items {
                if i.pk != pk || !i.sk.starts_with(prefix) {
                    continue;
                }
                match check.admit(&i, None) {
                    Ok(()) => good.push(i),
                    Err(r) => {
                        let why = format!("served by {node}, does not verify: {r}");
                        refused.entry(i.sk).or_insert((why, i.entry));
                    }
                }
            }
            verified.push((node, MetaResponse::Items(good)));
        }
        let mut rows: Vec<(String, Row<S::Value>)> = newest_rows(&self.rules, &pk, verified)
            .into_iter()
            .filter(|(sk, _)| !refused.contains_key(sk))
            .map(|(sk, e)| (sk, decode_row::<S>(&e)))
            .collect();
        for (sk, (why, e)) in refused {
            let row = Row {
                ts: e.ts,
                signer: e.signer,
                value: Some(Value::Corrupt(why)),
            };
            rows.push((sk, row));
        }
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(rows)
    }

    /// Rows of `S` whose sort key starts with `prefix`, deletions (tombstones) included,
    /// merged from a majority.
    pub async fn list_all<S: Schema>(
        &self,
        part: &S::Part,
        prefix: &str,
    ) -> Result<Vec<(String, Row<S::Value>)>, MetaError> {
        let pk = partition_key::<S>(part);
        // Rows from the nearest replica, versions only from the others: a long link carries
        // a few bytes a row, not the rows. (Name claims are decided by counting replicas, so
        // they are listed whole from each.)
        if self.rules.writer(S::KIND) != Some(Writer::FirstClaim)
            && let Some(rows) = self.list_nearest(&pk, prefix).await?
        {
            return Ok(rows
                .into_iter()
                .map(|(sk, e)| (sk, decode_row::<S>(&e)))
                .collect());
        }
        let answers = self
            .gather(
                &pk,
                || MetaRequest::List {
                    pk: pk.clone(),
                    prefix: prefix.into(),
                },
                false,
            )
            .await?;
        Ok(newest_rows(&self.rules, &pk, answers)
            .into_iter()
            .map(|(sk, e)| (sk, decode_row::<S>(&e)))
            .collect())
    }

    /// The newest version of every row of `pk` under `prefix` among a majority of its
    /// replicas, the rows from the nearest replica and only their versions from the others; a
    /// row some other replica holds newer is fetched from it (and checked), so the answer is
    /// the same as listing the rows from all of them. `None` if the nearest replica did not
    /// answer (the caller lists from all).
    async fn list_nearest(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Option<Vec<(String, Entry)>>, MetaError> {
        let targets = self.replicas_of_key(pk);
        let me = self.fabric.id();
        let rtt = |n: &NodeId| {
            if *n == me {
                Duration::ZERO
            } else {
                self.fabric.estimated_rtt(n).unwrap_or(Duration::MAX)
            }
        };
        let Some(nearest) = targets.iter().copied().min_by_key(rtt) else {
            return Ok(None);
        };
        let needed = targets.len() / 2 + 1;
        let mut tasks = JoinSet::new();
        for node in targets.iter().copied() {
            let this = self.clone();
            let req = if node == nearest {
                MetaRequest::List {
                    pk: pk.into(),
                    prefix: prefix.into(),
                }
            } else {
                MetaRequest::ListDigest {
                    pk: pk.into(),
                    prefix: prefix.into(),
                }
            };
            tasks.spawn(async move { (node, this.call(node, req).await) });
        }
        let mut rows: Option<std::collections::BTreeMap<String, Entry>> = None;
        let mut digests: Vec<(NodeId, Vec<Digest>)> = Vec::new();
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok((node, Ok(MetaResponse::Items(items)))) if node == nearest => {
                    rows = Some(
                        items
                            .into_iter()
                            .filter(|i| i.pk == pk && i.sk.starts_with(prefix))
                            .map(|i| (i.sk, i.entry))
                            .collect(),
                    );
                }
                Ok((node, Ok(MetaResponse::Digests(d)))) if node != nearest => {
                    digests.push((node, d));
                }
                Ok((node, _)) if node == nearest => return Ok(None),
                _ => {}
            }
            if rows.is_some() && 1 + digests.len() >= needed {
                tasks.detach_all();
                break;
            }
        }
        let Some(mut rows) = rows else {
            return Ok(None);
        };
        if 1 + digests.len() < needed {
            return Err(MetaError::Quorum {
                got: 1 + digests.len(),
                needed,
                last: "too few replicas answered a listing".into(),
            });
        }
        // Rows another replica holds a newer version of: fetched from it, checked, kept if
        // newer (a replica claiming a version it cannot produce changes nothing).
        let mut fetch = JoinSet::new();
        for (node, d) in digests {
            for d in d {
                if !d.sk.starts_with(prefix) {
                    continue;
                }
                let newer = rows
                    .get(&d.sk)
                    .is_none_or(|e| (d.ts, d.sig.0) > (e.ts, e.sig.0));
                if newer {
                    let (this, pk, sk) = (self.clone(), pk.to_string(), d.sk);
                    fetch.spawn(async move {
                        let read = MetaRequest::Read { pk, sk: sk.clone() };
                        (sk, this.call(node, read).await)
                    });
                }
            }
        }
        while let Some(done) = fetch.join_next().await {
            if let Ok((sk, Ok(MetaResponse::Entry(Some(e))))) = done
                && rows
                    .get(&sk)
                    .is_none_or(|cur| self.rules.replaces(pk, &sk, &e, cur))
            {
                rows.insert(sk, e);
            }
        }
        Ok(Some(rows.into_iter().collect()))
    }

    /// Rows stored before rows were signed, whose partition key starts with `prefix`, from
    /// every known member that is alive. Fails unless all of them answer: a migration must not
    /// miss rows. Only for migrating old data directories: the rows are unsigned, so a version
    /// counts only if this node holds it itself or two other members hold it identically (an
    /// acknowledged old write is on a majority of its three replicas; one member's word —
    /// anything a modified binary answers — is not enough); the newest such version of each
    /// row ([`vouched_legacy`]).
    pub async fn legacy_rows(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, LegacyEntry)>, MetaError> {
        let members: Vec<NodeId> = self
            .fabric
            .members()
            .into_iter()
            .filter(|m| m.is_alive())
            .map(|m| m.id)
            .collect();
        let mut answers = Vec::new();
        for node in members {
            let answer = self
                .call(node, MetaRequest::Legacy(prefix.into()))
                .await
                .map_err(|last| MetaError::Quorum {
                    got: 0,
                    needed: 1,
                    last: format!("{node}: {last}"),
                })?;
            if let MetaResponse::Legacy(rows) = answer {
                answers.push((node, rows));
            }
        }
        Ok(vouched_legacy(self.fabric.id(), answers))
    }

    /// One anti-entropy pass. For every partition this node replicates, compare Merkle trees
    /// with one other replica and exchange the rows of the leaves that differ. For partitions it
    /// holds rows of without being a replica (written while the fabric was split, or before
    /// membership changed), hand the differing rows to every current replica. Returns rows
    /// changed locally.
    pub async fn sync_once(&self) -> usize {
        let me = self.fabric.id();
        let mut changed = 0;
        let mut rng: rand::rngs::StdRng = rand::make_rng();
        let mut work: Vec<(Partition, Vec<NodeId>)> =
            (0..PARTITIONS).map(|p| (p, self.replicas_of(p))).collect();
        // Partitions of rows held to regions this node has rows of: their replicas are their
        // regions' (a node that has none yet is handed them by the replicas that do).
        for p in self.local.held_partitions().unwrap_or_default() {
            let mut reps: Vec<NodeId> = Vec::new();
            for pk in self.local.tagged_keys(p).unwrap_or_default() {
                for node in self.replicas_of_key(&pk) {
                    if !reps.contains(&node) {
                        reps.push(node);
                    }
                }
            }
            work.push((p, reps));
        }
        for (p, reps) in work {
            let Ok(ours) = self.local.tree(p) else {
                continue;
            };
            if reps.contains(&me) {
                let others: Vec<NodeId> = reps.into_iter().filter(|n| *n != me).collect();
                if others.is_empty() {
                    continue;
                }
                let peer = others[rng.random_range(0..others.len())];
                changed += self.exchange(peer, p, &ours, true).await;
            } else if ours.rows > 0 {
                for peer in reps {
                    self.exchange(peer, p, &ours, false).await;
                }
            }
        }
        changed
    }

    /// Compare partition `p` with `peer`; push our rows of differing leaves, and pull theirs if
    /// `pull`. Returns rows changed locally.
    async fn exchange(
        &self,
        peer: NodeId,
        p: Partition,
        ours: &PartitionTree,
        pull: bool,
    ) -> usize {
        let Ok(MetaResponse::Tree(theirs)) = self.call(peer, MetaRequest::Tree(p)).await else {
            return 0;
        };
        if theirs.root == ours.root {
            return 0;
        }
        let mask = ours.diff(&theirs);
        let mut changed = 0;
        if pull
            && let Ok(MetaResponse::Items(items)) =
                self.call(peer, MetaRequest::PullLeaves(p, mask)).await
        {
            let items: Vec<Item> = items
                .into_iter()
                .filter(|i| self.holds_here(&i.pk))
                .collect();
            let items = self.vouched(peer, items).await;
            let local = self.local.clone();
            let admit = self.admit_fn();
            let merged = tokio::task::spawn_blocking(move || local.merge(&items, &admit)).await;
            if let Ok(Ok(m)) = merged {
                changed = m.changed;
                for r in &m.refused {
                    tracing::warn!(peer = %peer, refusal = %r, "anti-entropy row refused");
                }
            }
        }
        let region = self.fabric.member(&peer).map(|m| m.placement.region);
        if let Ok(mut mine) = self.local.leaves(p, mask) {
            // Only what the peer may hold (rows of tags sharing the partition may not be).
            mine.retain(|i| region.as_ref().is_some_and(|r| placeable(&i.pk, r)));
            if mine.is_empty() {
                return changed;
            }
            let _ = self.call(peer, MetaRequest::Write(mine)).await;
        }
        changed
    }

    /// Rows `peer` handed over in anti-entropy that this replica may take. A delegated row
    /// older than writers may stamp (see [`Refusal::Stale`]) is taken only if a majority of
    /// the partition's replicas hold that very version — each took it from its writer while
    /// it was fresh — so a replica that missed a row still catches up, and a member that
    /// forged a backdated one, alone, cannot hand it on.
    async fn vouched(&self, peer: NodeId, items: Vec<Item>) -> Vec<Item> {
        let now = weft_net::now_ms();
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            if !stale(&item.entry, now) {
                out.push(item);
                continue;
            }
            let replicas = self.replicas_of_key(&item.pk);
            let needed = replicas.len() / 2 + 1;
            let mut holders = 1; // `peer` served it
            for node in replicas
                .iter()
                .filter(|n| **n != peer && **n != self.fabric.id())
            {
                let read = MetaRequest::Read {
                    pk: item.pk.clone(),
                    sk: item.sk.clone(),
                };
                if let Ok(MetaResponse::Entry(Some(e))) = self.call(*node, read).await
                    && e == item.entry
                {
                    holders += 1;
                }
            }
            if holders >= needed {
                out.push(item);
            } else {
                tracing::warn!(peer = %peer, pk = %item.pk, sk = %item.sk, "a backdated delegated row no majority holds; refused");
            }
        }
        out
    }

    async fn anti_entropy(self, interval: Duration) {
        loop {
            tokio::time::sleep(interval).await;
            let changed = self.sync_once().await;
            if changed > 0 {
                tracing::info!(rows = changed, "anti-entropy repaired metadata rows");
            }
        }
    }
}

/// The live value of a decoded row, or an error saying why it cannot be read here.
fn known_value<S: Schema>(
    pk: &str,
    sk: &str,
    row: Row<S::Value>,
) -> Result<Option<S::Value>, MetaError> {
    let what = || format!("{pk}/{sk}");
    match row.value {
        None => Ok(None),
        Some(Value::Known(v)) => Ok(Some(v)),
        Some(Value::Newer(f)) => Err(MetaError::Unreadable {
            what: what(),
            why: format!(
                "value format {f} is newer than this node knows ({})",
                S::FORMAT
            ),
        }),
        Some(Value::Corrupt(why)) => Err(MetaError::Unreadable { what: what(), why }),
    }
}

/// The value to update from: the newest version, joined with older live versions that only
/// some replicas still hold (none older than the newest deletion).
fn join_versions<S: Schema>(
    pk: &str,
    sk: &str,
    versions: Vec<Entry>,
) -> Result<Option<S::Value>, MetaError> {
    let mut current: Option<S::Value> = None;
    for (i, e) in versions.iter().enumerate() {
        let Some(v) = known_value::<S>(pk, sk, decode_row::<S>(e))? else {
            if i == 0 {
                return Ok(None);
            }
            break;
        };
        current = Some(match current {
            None => v,
            Some(newer) => S::join(newer, &v),
        });
    }
    Ok(current)
}

/// Checks rows for a replica or a reader: signature and writer rule, with membership from
/// the fabric and revocations from the endpoint's trust list.
struct Checker {
    rules: Arc<Rules>,
    fabric: Fabric,
    trust: Arc<weft_net::Trust>,
    /// For rows written to this replica (not read back, not vouched for by other replicas):
    /// the replica's clock (wall ms). A delegated row new to the replica must be stamped
    /// within [`crate::hlc::MAX_DRIFT_MS`] of it.
    fresh_at: Option<u64>,
}

impl Checker {
    /// Whether `id` is a current member node (this one, or one with a record, not revoked).
    fn is_member(&self, id: &NodeId) -> bool {
        *id == self.fabric.id() || (self.fabric.record(id).is_some() && !self.trust.is_revoked(id))
    }
}

/// Whether `e` is a delegated row stamped further behind `now` than a writer may stamp one
/// (see [`Refusal::Stale`]).
fn stale(e: &Entry, now: u64) -> bool {
    e.via.is_some() && e.ts.wall.saturating_add(crate::hlc::MAX_DRIFT_MS) < now
}

impl Judge for Checker {
    fn admit(&self, item: &Item, current: Option<&Entry>) -> Result<(), Refusal> {
        self.rules
            .check(item, current, &|id: &NodeId| self.is_member(id))?;
        if let Some(now) = self.fresh_at
            && stale(&item.entry, now)
            && current != Some(&item.entry)
        {
            return Err(Refusal::Stale {
                pk: item.pk.clone(),
                sk: item.sk.clone(),
                age_ms: now - item.entry.ts.wall,
                max_ms: crate::hlc::MAX_DRIFT_MS,
            });
        }
        Ok(())
    }

    fn replaces(&self, item: &Item, current: &Entry) -> bool {
        self.rules
            .replaces(&item.pk, &item.sk, &item.entry, current)
    }
}

/// Rows of partition `pk` from several replicas' list answers, the winning version of each
/// sort key.
fn newest_rows(
    rules: &Rules,
    pk: &str,
    answers: Vec<(NodeId, MetaResponse)>,
) -> Vec<(String, Entry)> {
    let mut held: std::collections::BTreeMap<String, Vec<(NodeId, Entry)>> = Default::default();
    for (node, r) in answers {
        if let MetaResponse::Items(items) = r {
            for i in items {
                held.entry(i.sk).or_default().push((node, i.entry));
            }
        }
    }
    // A name whose claims tie is left out of a listing (a read of it asks every replica).
    held.into_iter()
        .filter_map(|(sk, versions)| match winner(rules, pk, &sk, &versions) {
            Ok(Some(e)) => Some((sk, e)),
            Ok(None) | Err(Tied) => None,
        })
        .collect()
}

/// Live claims of a name by different keys, neither withdrawing the other, held by equally
/// many of the answering replicas: no version wins.
#[derive(Debug, PartialEq)]
struct Tied;

/// The winning version among `versions` (each as the replica that served it holds it): the
/// newest by the row rules — except for live claims of a name by different keys where neither
/// withdraws the other (two replicas each took the first claim they saw). Then each replica is
/// one vote, so a member holding (or serving) a claim of its own cannot take a name most
/// replicas give to another; and answers are no longer taken in the order they arrived.
fn winner(
    rules: &Rules,
    pk: &str,
    sk: &str,
    versions: &[(NodeId, Entry)],
) -> Result<Option<Entry>, Tied> {
    let newest = versions
        .iter()
        .map(|(_, e)| e.clone())
        .reduce(|a, b| if rules.replaces(pk, sk, &b, &a) { b } else { a });
    if rules.writer(crate::row::kind_of(pk)) != Some(Writer::FirstClaim) {
        return Ok(newest);
    }
    // Each author's newest version, and the replicas that hold a live claim of it; an author
    // whose newest version is its own deletion has let the name go.
    let mut claims: Vec<(Entry, std::collections::BTreeSet<NodeId>)> = Vec::new();
    for (node, e) in versions {
        let at = match claims.iter().position(|(c, _)| c.author() == e.author()) {
            Some(at) => {
                if crate::local::supersedes(e, &claims[at].0) {
                    claims[at].0 = e.clone();
                }
                at
            }
            None => {
                claims.push((e.clone(), Default::default()));
                claims.len() - 1
            }
        };
        if !e.is_tombstone() {
            claims[at].1.insert(*node);
        }
    }
    claims.retain(|(c, _)| !c.is_tombstone());
    // A claim that carries the withdrawal of another settles it.
    let standing: Vec<&(Entry, std::collections::BTreeSet<NodeId>)> = claims
        .iter()
        .filter(|(c, _)| {
            !claims
                .iter()
                .any(|(other, _)| other.author() != c.author() && rules.replaces(pk, sk, other, c))
        })
        .collect();
    if standing.len() <= 1 {
        return Ok(newest);
    }
    let most = standing.iter().map(|(_, n)| n.len()).max().unwrap_or(0);
    let top: Vec<_> = standing.iter().filter(|(_, n)| n.len() == most).collect();
    match top.as_slice() {
        [(claim, _)] => {
            // A deletion by the claim's own author newer than it still wins.
            Ok(Some(match &newest {
                Some(n) if n.author() == claim.author() && rules.replaces(pk, sk, n, claim) => {
                    n.clone()
                }
                _ => claim.clone(),
            }))
        }
        _ => Err(Tied),
    }
}

/// Rows stored before rows were signed: (partition key, sort key, entry).
type LegacyRows = Vec<(String, String, LegacyEntry)>;

/// The legacy rows a migrating node (`me`) may re-sign, from every member's answer: per row,
/// the newest version that `me` holds itself or at least two other members hold identically.
fn vouched_legacy(me: NodeId, answers: Vec<(NodeId, LegacyRows)>) -> LegacyRows {
    type Versions = Vec<(LegacyEntry, bool, std::collections::BTreeSet<NodeId>)>;
    let mut rows: std::collections::BTreeMap<(String, String), Versions> = Default::default();
    for (node, answer) in answers {
        for (pk, sk, e) in answer {
            let versions = rows.entry((pk, sk)).or_default();
            let at = match versions.iter().position(|(v, _, _)| *v == e) {
                Some(at) => at,
                None => {
                    versions.push((e, false, Default::default()));
                    versions.len() - 1
                }
            };
            if node == me {
                versions[at].1 = true;
            } else {
                versions[at].2.insert(node);
            }
        }
    }
    rows.into_iter()
        .filter_map(|((pk, sk), versions)| {
            versions
                .into_iter()
                .filter(|(_, mine, others)| *mine || others.len() >= 2)
                .map(|(e, _, _)| e)
                .max_by(|a, b| a.ts.cmp(&b.ts))
                .map(|e| (pk, sk, e))
        })
        .collect()
}

#[cfg(test)]
mod legacy_tests {
    use super::*;

    fn entry(wall: u64, value: &[u8]) -> LegacyEntry {
        LegacyEntry {
            ts: Timestamp {
                wall,
                logical: 0,
                node: NodeId([9; 32]),
            },
            value: Some(value.to_vec()),
        }
    }

    /// [untrusted] smaller items: a migrating node re-signs old, unsigned rows as its own
    /// account's. One member answering with rows it made up — a bucket claim for the
    /// migrating account, or a "newer" version of a real row pointing at its own data —
    /// must not get them signed.
    #[test]
    fn one_members_word_does_not_make_a_legacy_row() {
        let (me, a, b, rogue) = (
            NodeId([1; 32]),
            NodeId([2; 32]),
            NodeId([3; 32]),
            NodeId([4; 32]),
        );
        let row = |e: LegacyEntry| ("b/".to_string(), "photos".to_string(), e);
        let real = entry(10, b"real");
        let forged_newer = entry(u64::MAX, b"the rogue's");
        let answers = vec![
            (me, vec![]),
            (a, vec![row(real.clone())]),
            (b, vec![row(real.clone())]),
            (
                rogue,
                vec![
                    row(forged_newer.clone()),
                    ("b/".into(), "made-up".into(), entry(5, b"x")),
                ],
            ),
        ];
        let got = vouched_legacy(me, answers);
        assert_eq!(got, vec![row(real.clone())]);
        // This node's own replica is its own word; two members agreeing are a majority.
        let answers = vec![
            (me, vec![("b/".into(), "mine".into(), entry(3, b"m"))]),
            (a, vec![row(forged_newer.clone())]),
            (b, vec![row(forged_newer.clone())]),
        ];
        let got = vouched_legacy(me, answers);
        assert_eq!(got.len(), 2);
        assert!(got.contains(&row(forged_newer)));
    }
}

#[cfg(test)]
mod claim_tests {
    use weft_core::SecretKey;

    use super::*;

    fn claim(key: &SecretKey, wall: u64, value: Option<&[u8]>) -> Entry {
        let ts = Timestamp {
            wall,
            logical: 0,
            node: key.public(),
        };
        Entry::sign(key, "names", "photos", ts, value.map(<[u8]>::to_vec))
    }

    /// [untrusted] 2: two live claims of a name by different keys (a replica that took a
    /// planted claim first, or a member serving one of its own) are decided by how many
    /// replicas hold each, not by which answer arrived first; a tie is no one's.
    #[test]
    fn competing_claims_are_decided_by_replicas_not_by_arrival() {
        let mut rules = Rules::new();
        rules.add("names", Writer::FirstClaim);
        let (alice, mallory) = (SecretKey::from_seed([1; 32]), SecretKey::from_seed([2; 32]));
        let (a, b, c) = (NodeId([1; 32]), NodeId([2; 32]), NodeId([3; 32]));
        let hers = claim(&alice, 10, Some(b"alice"));
        let his = claim(&mallory, 20, Some(b"mallory"));
        for order in [
            vec![(c, his.clone()), (a, hers.clone()), (b, hers.clone())],
            vec![(a, hers.clone()), (c, his.clone()), (b, hers.clone())],
            vec![(a, hers.clone()), (b, hers.clone()), (c, his.clone())],
        ] {
            assert_eq!(
                winner(&rules, "names", "photos", &order),
                Ok(Some(hers.clone()))
            );
        }
        // One replica each: undecided either way round (the reader asks every replica).
        assert_eq!(
            winner(
                &rules,
                "names",
                "photos",
                &[(c, his.clone()), (a, hers.clone())]
            ),
            Err(Tied)
        );
        assert_eq!(
            winner(
                &rules,
                "names",
                "photos",
                &[(a, hers.clone()), (c, his.clone())]
            ),
            Err(Tied)
        );
        // Her own deletion, where most replicas hold it, lets the name go as before.
        let gone = claim(&alice, 30, None);
        assert_eq!(
            winner(
                &rules,
                "names",
                "photos",
                &[(a, gone.clone()), (b, gone.clone()), (c, hers.clone())]
            ),
            Ok(Some(gone))
        );
        // Without a contest, the newest version wins as for any row.
        let newer = claim(&alice, 40, Some(b"alice again"));
        assert_eq!(
            winner(&rules, "names", "photos", &[(a, hers), (b, newer.clone())]),
            Ok(Some(newer))
        );
    }
}
