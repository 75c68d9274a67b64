//! The replicated table: quorum writes and reads over the partition's replicas, read repair,
//! and periodic anti-entropy (digest comparison, then exchange of the differing partition).

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use weft_core::{NodeId, proto};
use weft_fabric::{Fabric, MemberState};
use weft_net::{Endpoint, NetError, Peer, read_message, write_message};

use crate::hlc::{Hlc, Timestamp};
use crate::local::{Entry, Item, LocalTable, PartitionTree};
use crate::ring::{PARTITIONS, Partition, Replica, partition_of, replicas};

/// Replicas per partition.
pub const REPLICATION: usize = 3;
const MAX_FRAME: usize = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(5);

/// A request between replicas.
#[derive(Debug, Serialize, Deserialize)]
pub enum MetaRequest {
    /// Merge these rows.
    Write(Vec<Item>),
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
}

impl Table {
    /// Serve this node's replica and start anti-entropy every `interval`.
    pub fn start(
        endpoint: Endpoint,
        fabric: Fabric,
        local: Arc<LocalTable>,
        interval: Duration,
    ) -> Table {
        let table = Table {
            hlc: Arc::new(Mutex::new(Hlc::new(fabric.id()))),
            endpoint,
            fabric,
            local,
        };
        let server = table.clone();
        table.endpoint.register_stream(
            proto::META,
            false,
            Arc::new(move |peer: Peer, mut send, mut recv| {
                let table = server.clone();
                Box::pin(async move {
                    let serve = async {
                        let req: MetaRequest = read_message(&mut recv, MAX_FRAME).await?;
                        let resp = table.answer(req).await;
                        write_message(&mut send, &resp).await?;
                        let _ = send.finish();
                        Ok::<_, NetError>(())
                    };
                    if let Ok(Err(e)) = tokio::time::timeout(TIMEOUT, serve).await {
                        tracing::debug!(?peer, error = %e, "metadata request failed");
                    }
                })
            }),
        );
        tokio::spawn(table.clone().anti_entropy(interval));
        table
    }

    async fn answer(&self, req: MetaRequest) -> MetaResponse {
        let local = self.local.clone();
        let now = weft_net::now_ms();
        if let MetaRequest::Write(items) = &req {
            let mut hlc = self.hlc.lock();
            for i in items {
                if hlc.observe(i.entry.ts, now).is_err() {
                    return MetaResponse::Error("timestamp too far in the future".into());
                }
            }
        }
        let result = tokio::task::spawn_blocking(move || match req {
            MetaRequest::Write(items) => local.merge(&items).map(|_| MetaResponse::Written),
            MetaRequest::Read { pk, sk } => local.get(&pk, &sk).map(MetaResponse::Entry),
            MetaRequest::List { pk, prefix } => local.list(&pk, &prefix).map(MetaResponse::Items),
            MetaRequest::Tree(p) => local.tree(p).map(MetaResponse::Tree),
            MetaRequest::PullLeaves(p, mask) => local.leaves(p, mask).map(MetaResponse::Items),
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

    /// Current replicas of a partition among live members.
    pub fn replicas_of(&self, partition: Partition) -> Vec<NodeId> {
        let nodes: Vec<Replica> = self
            .fabric
            .members()
            .into_iter()
            .filter(|m| m.state == MemberState::Alive)
            .filter_map(|m| {
                Some(Replica {
                    id: m.id.parse().ok()?,
                    site: m.site,
                })
            })
            .collect();
        replicas(partition, &nodes, REPLICATION)
    }

    async fn call(&self, node: NodeId, req: MetaRequest) -> Result<MetaResponse, String> {
        if node == self.fabric.id() {
            return Ok(self.answer(req).await);
        }
        let addr = self
            .fabric
            .record(&node)
            .map(|r| r.body.addr)
            .ok_or("no address known")?;
        let exchange = async {
            let (mut send, mut recv) = self.endpoint.open(node, addr, proto::META).await?;
            write_message(&mut send, &req).await?;
            let _ = send.finish();
            read_message::<MetaResponse>(&mut recv, MAX_FRAME).await
        };
        match tokio::time::timeout(TIMEOUT, exchange).await {
            Ok(Ok(MetaResponse::Error(e))) => Err(e),
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Send `req` to every replica of `pk`; return once `needed` answered successfully.
    async fn quorum(
        &self,
        pk: &str,
        req: impl Fn() -> MetaRequest,
    ) -> Result<Vec<(NodeId, MetaResponse)>, MetaError> {
        self.gather(pk, req, false).await
    }

    /// Ask every replica of `pk`'s partition; return once a majority answered. With `relaxed`,
    /// wait for every replica to answer or fail, and accept any number of answers but zero.
    async fn gather(
        &self,
        pk: &str,
        req: impl Fn() -> MetaRequest,
        relaxed: bool,
    ) -> Result<Vec<(NodeId, MetaResponse)>, MetaError> {
        let targets = self.replicas_of(partition_of(pk.as_bytes()));
        let needed = targets.len() / 2 + 1;
        let mut tasks = JoinSet::new();
        for node in targets.iter().copied() {
            let (this, r) = (self.clone(), req());
            tasks.spawn(async move { (node, this.call(node, r).await) });
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

    /// Write a row (None deletes it). Durable on a majority of replicas when it returns.
    pub async fn put(
        &self,
        pk: &str,
        sk: &str,
        value: Option<Vec<u8>>,
    ) -> Result<Timestamp, MetaError> {
        let ts = self.hlc.lock().now(weft_net::now_ms());
        let item = Item {
            pk: pk.into(),
            sk: sk.into(),
            entry: Entry { ts, value },
        };
        self.quorum(pk, || MetaRequest::Write(vec![item.clone()]))
            .await?;
        Ok(ts)
    }

    /// Read a row from a majority; the newest version wins and stale replicas are repaired.
    pub async fn get(&self, pk: &str, sk: &str) -> Result<Option<Entry>, MetaError> {
        self.read(pk, sk, false).await
    }

    /// Like [`Table::get`], but asks every replica and takes the newest answer of those that
    /// answered, however few: right after two of three replicas left, the remaining one may be
    /// the only node with the row (the new replicas get it by anti-entropy later). For hints
    /// where a possibly stale row beats none, such as where repaired shards went.
    pub async fn get_relaxed(&self, pk: &str, sk: &str) -> Result<Option<Entry>, MetaError> {
        self.read(pk, sk, true).await
    }

    async fn read(&self, pk: &str, sk: &str, relaxed: bool) -> Result<Option<Entry>, MetaError> {
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
            .map(|(n, r)| {
                (
                    n,
                    if let MetaResponse::Entry(e) = r {
                        e
                    } else {
                        None
                    },
                )
            })
            .collect();
        let newest = entries
            .iter()
            .filter_map(|(_, e)| e.clone())
            .max_by_key(|e| e.ts);
        if let Some(best) = &newest {
            for (node, e) in &entries {
                if e.as_ref().is_none_or(|e| e.ts < best.ts) {
                    let (this, node) = (self.clone(), *node);
                    let item = Item {
                        pk: pk.into(),
                        sk: sk.into(),
                        entry: best.clone(),
                    };
                    tokio::spawn(
                        async move { this.call(node, MetaRequest::Write(vec![item])).await },
                    );
                }
            }
        }
        Ok(newest)
    }

    /// Live rows of `pk` whose sort key starts with `prefix`, merged from a majority.
    pub async fn list(&self, pk: &str, prefix: &str) -> Result<Vec<(String, Entry)>, MetaError> {
        Ok(self
            .list_all(pk, prefix)
            .await?
            .into_iter()
            .filter(|(_, e)| e.value.is_some())
            .collect())
    }

    /// Rows of `pk` (live ones) whose sort key starts with `prefix`, merged from *every*
    /// replica; fails unless all of them answer. For decisions that must not miss a row, such
    /// as deleting data no row points at: right after replicas changed, a majority may be made
    /// of new replicas that have not been handed the rows yet.
    pub async fn list_from_all(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Entry)>, MetaError> {
        let replicas = self.replicas_of(partition_of(pk.as_bytes())).len();
        let answers = self
            .gather(
                pk,
                || MetaRequest::List {
                    pk: pk.into(),
                    prefix: prefix.into(),
                },
                true,
            )
            .await?;
        if answers.len() < replicas {
            return Err(MetaError::Quorum {
                got: answers.len(),
                needed: replicas,
                last: "not every replica answered".into(),
            });
        }
        Ok(newest_rows(answers)
            .into_iter()
            .filter(|(_, e)| e.value.is_some())
            .collect())
    }

    /// Rows of `pk` whose sort key starts with `prefix`, deletions (tombstones) included,
    /// merged from a majority.
    pub async fn list_all(
        &self,
        pk: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Entry)>, MetaError> {
        let answers = self
            .quorum(pk, || MetaRequest::List {
                pk: pk.into(),
                prefix: prefix.into(),
            })
            .await?;
        Ok(newest_rows(answers))
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
        for p in 0..PARTITIONS {
            let reps = self.replicas_of(p);
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
            changed = self.local.merge(&items).unwrap_or(0);
        }
        if let Ok(mine) = self.local.leaves(p, mask)
            && !mine.is_empty()
        {
            let _ = self.call(peer, MetaRequest::Write(mine)).await;
        }
        changed
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

/// Rows from several replicas' list answers, the newest version of each sort key.
fn newest_rows(answers: Vec<(NodeId, MetaResponse)>) -> Vec<(String, Entry)> {
    let mut merged: std::collections::BTreeMap<String, Entry> = std::collections::BTreeMap::new();
    for (_, r) in answers {
        if let MetaResponse::Items(items) = r {
            for i in items {
                if merged.get(&i.sk).is_none_or(|e| e.ts < i.entry.ts) {
                    merged.insert(i.sk, i.entry);
                }
            }
        }
    }
    merged.into_iter().collect()
}
