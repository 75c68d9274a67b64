//! A rogue member's campaign: the attacks of the [untrusted] issue that a member can make on
//! the wire with nothing but its own credentials, made at once against every node, object,
//! name and member the rogue can see. [`Rogue::campaign`] runs one round and reports what it
//! tried and what the honest nodes accepted; the in-process campaign test runs it against a
//! [`crate::Builder`] fabric, and `weft-rogue` (this crate's binary) joins a real fabric of
//! `weft` processes by invite and runs it there over and over.
//!
//! What a round does:
//! 1. **Delete others' objects** — every catalog row marked released at the epoch with every
//!    shard moved to the rogue, the rogue's own copies dropped, `SHARD_DELETE` for every shard
//!    and manifest sent to every member, then every catalog row deleted and the deletes asked
//!    again.
//! 2. **Steal names** — every bucket and model claim of another account taken over with a
//!    forged withdrawal (a deletion "by" the owner through a delegation the owner never
//!    signed).
//! 3. **Crash nodes** — a metadata write whose row nests priors 10,000 deep (~1.4 MB), to
//!    every member.
//! 4. **Escape the model cache** — a model claim (the rogue's own account) whose name and
//!    file name climb out of the cache folder.
//! 5. **Attract prompts** — a ready `serve` row for every model.
//! 6. **Drop members** — "node X is down", about every other member, to every member.
//! 7. **Jobs** — offers whose keys climb out of the jobs folder, starts of attempts nobody
//!    reserved, and, for every job of every bucket it can see, a reservation then a start
//!    with the rogue's own session (a runner that took it would run another account's job as
//!    the rogue); every job's logs read with the rogue's own delegation and with a forged
//!    one of the owner's.
//! 8. **Fill disks** — junk shards (no object owns them), [`JUNK_PER_PEER`] a round, to every
//!    member.
//! 9. **Lift quotas** — a default quota of no limit signed with the member's key, and, for
//!    every account owning a bucket, a tally that wipes its use.
//! 10. **Rewrite the ledger** — the head row overwritten with a checkpoint of another tree of
//!     the log's size, that checkpoint shown to every member for its cosignature, and a
//!     receipt "of" every other member (signed by the rogue) handed to every member as the
//!     sequencer.
//!
//! The honest outcome each attack must meet is in ARCHITECTURE.md's trust rules.

use std::time::Duration;

use weft_core::{ContentHash, Delegation, NodeId, Scope, wire};
use weft_data::schema::Buckets;
use weft_inference::schema::{Models, Servers};
use weft_inference::{ModelFile, ModelKind, ModelRecord, Serving};
use weft_meta::schema::{encode_value, partition_key};
use weft_meta::table::{META, MetaRequest, MetaResponse};
use weft_meta::{Entry, Item, Schema, Timestamp};
use weft_store::protocol::{DELETE, DeleteRequest};

use crate::Rogue;

/// What one round of the campaign tried, and what honest nodes accepted of it.
#[derive(Clone, Debug, Default)]
pub struct Report {
    /// Catalog rows rewritten (released, moved to the rogue), then deleted.
    pub catalog_rows: usize,
    /// `SHARD_DELETE` requests sent.
    pub deletes_asked: usize,
    /// Files honest nodes said they deleted for them.
    pub deleted_by_peers: u64,
    /// Bucket and model claims of other accounts the rogue tried to take.
    pub names_tried: usize,
    /// Claims that read back as the rogue's afterwards.
    pub names_taken: usize,
    /// Members sent a row nested 10,000 deep.
    pub deep_rows_sent: usize,
    /// Members that accepted it (or did not answer).
    pub deep_rows_not_refused: usize,
    /// Whether the escaping model claim was written.
    pub escape_claimed: bool,
    /// `serve` rows written.
    pub serve_rows: usize,
    /// "Down" datagrams sent about other members.
    pub down_lies: usize,
    /// Job questions sent (hostile keys, unreserved starts, others' jobs with the rogue's
    /// session).
    pub job_asks: usize,
    /// Of those, the ones a runner took (reserved room for a hostile key, or started).
    pub job_asks_taken: usize,
    /// Log reads of others' jobs (the rogue's delegation, or a forged one of the owner's).
    pub log_reads: usize,
    /// Of those, the ones a node answered with log bytes.
    pub log_reads_answered: usize,
    /// Bytes of junk shards sent.
    pub junk_sent: u64,
    /// Of those, the bytes members stored (each up to the rogue's share of its disk).
    pub junk_stored: u64,
    /// Quota and tally rows written for others.
    pub quota_rows: usize,
    /// Of those, the ones that read back as written.
    pub quota_rows_taken: usize,
    /// Ledger questions sent (cosignatures of a rewritten history, forged receipts).
    pub ledger_asks: usize,
    /// Of those, the ones a member cosigned or took.
    pub ledger_taken: usize,
}

/// Junk shard bytes sent to each member a round.
pub const JUNK_PER_PEER: u64 = 8 << 20;

/// The name and file of the model claim that tries to climb out of the model cache.
pub const ESCAPE_NAME: &str = "../../../../../../tmp/weft-rogue-escape";

impl Rogue {
    /// One round of every attack (see the module docs).
    pub async fn campaign(&self) -> Report {
        let mut report = Report::default();
        self.against_objects(&mut report).await;
        self.against_names(&mut report).await;
        self.deep_rows(&mut report).await;
        self.against_models(&mut report).await;
        self.down_lies(&mut report);
        self.against_jobs(&mut report).await;
        self.fill_disks(&mut report).await;
        self.against_quotas(&mut report).await;
        self.against_ledger(&mut report).await;
        report
    }

    async fn against_ledger(&self, report: &mut Report) {
        use weft_ledger::schema::{HEAD, Head, Heads};
        use weft_ledger::{LEDGER_RPC, LedgerAnswer, LedgerAsk, Receipt, ReceiptBody, Work};
        let table = self.node().table();
        let ledger = self.node().ledger();
        let origin = ledger.origin().to_string();
        // A receipt of its own first (as any member may), so the ledger has a head to rewrite.
        if let Ok(own) = ledger.issue(
            self.id(),
            ContentHash::of(b"the rogue's own work"),
            Work::Transfer { bytes: 1 },
        ) {
            let _ = ledger
                .wait_included(own.body.seq, Duration::from_secs(20))
                .await;
        }
        let Ok(signer) =
            weft_tlog::Signer::new(&weft_ledger::signer_name(&self.id()), self.key().clone())
        else {
            return;
        };
        // Another tree of the head's size, written over the head and shown to every member.
        if let Ok(Some(head)) = table.get_value::<Heads>(&(), HEAD).await
            && let Ok((_, checkpoint)) = weft_ledger::replica::checkpoint_of(&head.note)
        {
            let forged = weft_tlog::Checkpoint {
                root: weft_tlog::leaf_hash(b"rewritten by the rogue"),
                ..checkpoint
            };
            if let Ok(note) = signer.sign(&forged.text()) {
                let note = note.encode();
                let _ = table
                    .put::<Heads>(
                        self.key(),
                        &(),
                        HEAD,
                        Some(&Head {
                            note: note.clone(),
                            batch: head.batch,
                        }),
                    )
                    .await;
                for peer in self.peers() {
                    let ask = LedgerAsk::Cosign {
                        note: note.clone(),
                        batch: head.batch,
                        entries: vec![],
                        prev: None,
                        cosigned: None,
                    };
                    report.ledger_asks += 1;
                    if matches!(
                        self.ask(LEDGER_RPC, peer, &ask).await,
                        Ok(LedgerAnswer::Cosigned(_))
                    ) {
                        report.ledger_taken += 1;
                    }
                }
            }
        }
        // Receipts "of" the other members, signed by the rogue, to every member.
        let peers = self.peers();
        let forged: Vec<Vec<u8>> = peers
            .iter()
            .map(|victim| {
                Receipt::sign(
                    self.key(),
                    ReceiptBody {
                        format: 1,
                        node: *victim,
                        seq: 0,
                        prev: ContentHash([0; 32]),
                        at_ms: weft_net::now_ms(),
                        account: *victim,
                        request: ContentHash::of(origin.as_bytes()),
                        work: Work::Transfer { bytes: u64::MAX },
                    },
                )
                .to_entry()
            })
            .collect();
        for peer in peers {
            report.ledger_asks += 1;
            if matches!(
                self.ask(LEDGER_RPC, peer, &LedgerAsk::Submit(forged.clone()))
                    .await,
                Ok(LedgerAnswer::Taken)
            ) {
                report.ledger_taken += 1;
            }
        }
    }

    async fn fill_disks(&self, report: &mut Report) {
        const SHARD: usize = 1 << 20;
        for peer in self.peers() {
            for i in 0..JUNK_PER_PEER / SHARD as u64 {
                let mut junk = vec![0u8; SHARD];
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                junk[..8].copy_from_slice(&nanos.to_le_bytes());
                junk[8..16].copy_from_slice(&i.to_le_bytes());
                junk[16..48].copy_from_slice(&peer.0);
                report.junk_sent += SHARD as u64;
                match self.put_shard(peer, &junk).await {
                    Ok(()) => report.junk_stored += SHARD as u64,
                    Err(_) => break,
                }
            }
        }
    }

    async fn against_quotas(&self, report: &mut Report) {
        use weft_data::quota::{AccountQuota, Tally};
        use weft_data::schema::{DEFAULT_QUOTA, Quotas, Tallies, TallyKey};
        let table = self.node().table();
        // No limits and a vast allowance: what a rogue would grant itself.
        let free = AccountQuota {
            set_ms: weft_net::now_ms(),
            allowance: Some(u64::MAX),
            ..AccountQuota::default()
        };
        report.quota_rows += 1;
        if table
            .put::<Quotas>(self.key().clone(), &(), DEFAULT_QUOTA, Some(&free))
            .await
            .is_ok()
        {
            report.quota_rows_taken += 1;
        }
        let Ok(buckets) = table.list::<Buckets>(&(), "").await else {
            return;
        };
        let mut owners: Vec<NodeId> = buckets
            .into_iter()
            .filter_map(|(_, r)| r.known().map(|b| b.owner))
            .filter(|o| *o != self.id())
            .collect();
        owners.sort_by_key(|o| o.0);
        owners.dedup();
        for owner in owners {
            let key = TallyKey {
                owner,
                node: self.id(),
                bucket: "wiped".into(),
            };
            let wipe = Tally {
                held: 0,
                released: u64::MAX / 2,
            };
            report.quota_rows += 1;
            if table
                .put::<Tallies>(self.key().clone(), &owner, &key, Some(&wipe))
                .await
                .is_ok()
            {
                report.quota_rows_taken += 1;
            }
        }
    }

    /// Every other member with an address.
    fn peers(&self) -> Vec<NodeId> {
        self.node()
            .fabric()
            .members()
            .into_iter()
            .filter(|m| !m.is_self && m.addr.is_some())
            .map(|m| m.id)
            .collect()
    }

    fn now(&self) -> Timestamp {
        Timestamp {
            wall: weft_net::now_ms(),
            logical: 0,
            node: self.id(),
        }
    }

    async fn against_objects(&self, report: &mut Report) {
        let registry = self.node().healer().registry();
        let storage = self.node().storage();
        let mut targets: Vec<(ContentHash, Vec<ContentHash>)> = Vec::new();
        for part in 0..=u8::MAX {
            let Ok(listing) = registry.list(part).await else {
                continue;
            };
            for (hash, mut entry) in listing.rows {
                let Ok(m) = storage.manifest_at(hash, &entry.holders).await else {
                    continue;
                };
                let mut files = vec![hash];
                for seg in &m.segments {
                    files.extend(seg.info.shards.iter().copied());
                    for i in 0..seg.info.shards.len() {
                        entry.set_moved(seg.info.index, i as u16, self.id());
                    }
                }
                entry.released_ms = Some(1);
                entry.created_ms = 0;
                if registry.put(&hash, &entry).await.is_ok() {
                    report.catalog_rows += 1;
                }
                targets.push((hash, files));
            }
        }
        for (_, files) in &targets {
            for f in files {
                let _ = storage.local().delete(f);
            }
        }
        self.ask_deletes(&targets, report).await;
        for (hash, _) in &targets {
            let _ = registry.forget(hash).await;
        }
        self.ask_deletes(&targets, report).await;
    }

    async fn ask_deletes(&self, targets: &[(ContentHash, Vec<ContentHash>)], report: &mut Report) {
        let peers = self.peers();
        for (hash, files) in targets {
            for peer in &peers {
                let req = DeleteRequest {
                    manifest: *hash,
                    manifest_holders: peers.clone(),
                    shards: files.clone(),
                };
                report.deletes_asked += 1;
                if let Ok(n) = self.ask(DELETE, *peer, &req).await {
                    report.deleted_by_peers += n;
                }
            }
        }
    }

    /// Take over every claim of kind `S` not the rogue's own, with a forged withdrawal.
    async fn take_over<S>(&self, retitle: impl Fn(&mut S::Value), report: &mut Report)
    where
        S: Schema<Part = (), Sort = str>,
    {
        let table = self.node().table();
        let Ok(rows) = table.list::<S>(&(), "").await else {
            return;
        };
        let pk = partition_key::<S>(&());
        let peers = self.peers();
        for (name, row) in rows {
            let owner = row.signer;
            if owner == self.id() {
                continue;
            }
            let Some(mut value) = row.known() else {
                continue;
            };
            retitle(&mut value);
            let key = self.key();
            // A "withdrawal" by the owner: the rogue's own deletion, dressed in a delegation
            // that names the owner's account but that the owner never signed.
            let mut fake = Delegation::sign(key, key.public(), Scope::Account, u64::MAX);
            fake.body.account = owner;
            let mut withdrawal = Entry::sign(key.clone(), &pk, &name, self.now(), None);
            withdrawal.via = Some(fake);
            let mut ts = self.now();
            ts.logical = 1;
            let mut claim =
                Entry::sign(key.clone(), &pk, &name, ts, Some(encode_value::<S>(&value)));
            claim.prior = Some(Box::new(withdrawal));
            let item = Item {
                pk: pk.clone(),
                sk: name.clone(),
                entry: claim,
            };
            report.names_tried += 1;
            for peer in &peers {
                let write = MetaRequest::Write(vec![item.clone()]);
                // A replica answers "written" for a row it merged and kept, or merged and
                // found older than its own: what counts is whose claim reads back.
                let _ = self.ask(META, *peer, &write).await;
            }
            if let Ok(Some(now)) = table.get::<S>(&(), &name).await
                && now.signer == self.id()
            {
                report.names_taken += 1;
            }
        }
    }

    async fn against_names(&self, report: &mut Report) {
        let me = self.id();
        self.take_over::<Buckets>(|b| b.owner = me, report).await;
        self.take_over::<Models>(|m| m.owner = me, report).await;
    }

    async fn deep_rows(&self, report: &mut Report) {
        let bytes = deep_write(10_000, self);
        for peer in self.peers() {
            report.deep_rows_sent += 1;
            if !self.refused_raw(peer, &bytes).await {
                report.deep_rows_not_refused += 1;
            }
        }
    }

    /// Send `bytes` as a metadata request to `peer`: whether it answered with a refusal.
    async fn refused_raw(&self, peer: NodeId, bytes: &[u8]) -> bool {
        let Some(addr) = self.node().fabric().record(&peer).map(|r| r.body.addr) else {
            return false;
        };
        let endpoint = self.node().storage().endpoint();
        let exchange = async {
            let (mut send, mut recv) = endpoint.open(peer, addr, META.protocol()).await.ok()?;
            send.write_all(&wire::frame(bytes)).await.ok()?;
            let _ = send.finish();
            weft_net::read_message::<MetaResponse>(&mut recv, 1 << 20)
                .await
                .ok()
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(10), exchange).await,
            Ok(Some(MetaResponse::Error(_))) | Ok(None)
        )
    }

    async fn against_models(&self, report: &mut Report) {
        let table = self.node().table();
        let key = self.key().clone();
        let escape = ModelRecord {
            name: ESCAPE_NAME.into(),
            owner: self.id(),
            kind: ModelKind::Chat,
            files: vec![ModelFile {
                name: ESCAPE_NAME.into(),
                size: 4,
                blake3: "../../../../../../tmp/weft-rogue-escape-blob".into(),
                capability: "weft-cap1-x".into(),
            }],
            replicas: 6,
            regions: Vec::new(),
            jurisdictions: Vec::new(),
            created_ms: weft_net::now_ms(),
        };
        report.escape_claimed = table
            .put::<Models>(key.clone(), &(), ESCAPE_NAME, Some(&escape))
            .await
            .is_ok();
        let Ok(models) = table.list::<Models>(&(), "").await else {
            return;
        };
        for (name, row) in models {
            let Some(m) = row.known() else { continue };
            let digest = m
                .files
                .first()
                .map(|f| f.blake3.clone())
                .unwrap_or_default();
            let serving = Serving {
                digest,
                ready: true,
                error: None,
                since_ms: weft_net::now_ms(),
            };
            if table
                .put::<Servers>(key.clone(), &name, &self.id(), Some(&serving))
                .await
                .is_ok()
            {
                report.serve_rows += 1;
            }
        }
    }

    fn down_lies(&self, report: &mut Report) {
        use bytes::BufMut;
        use foca::{Codec, Header, Member, Message, PostcardCodec, State};
        use weft_fabric::SwimId;
        let fabric = self.node().fabric();
        let swim_id = |node: &NodeId| {
            fabric.record(node).map(|r| SwimId {
                node: *node,
                addr: r.body.addr,
                generation: r.body.generation,
            })
        };
        let (Some(me), peers) = (swim_id(&self.id()), self.peers()) else {
            return;
        };
        for victim in &peers {
            let Some(victim_id) = swim_id(victim) else {
                continue;
            };
            for to in peers.iter().filter(|p| *p != victim) {
                let Some(to_id) = swim_id(to) else { continue };
                let mut buf = Vec::new();
                let header = Header {
                    src: me.clone(),
                    src_incarnation: 0,
                    dst: to_id.clone(),
                    message: Message::Gossip,
                };
                if PostcardCodec.encode_header(&header, &mut buf).is_err() {
                    continue;
                }
                buf.put_u16(1);
                let lie = Member::new(victim_id.clone(), 0, State::Down);
                if PostcardCodec.encode_member(&lie, &mut buf).is_err() {
                    continue;
                }
                self.node().storage().endpoint().send_datagram(
                    *to,
                    to_id.addr,
                    weft_core::proto::SWIM,
                    &buf,
                );
                report.down_lies += 1;
            }
        }
    }
}

impl Rogue {
    async fn against_jobs(&self, report: &mut Report) {
        use weft_jobs::JobKey;
        use weft_jobs::protocol::{JOB_RPC, JobAnswer, JobAsk};
        let peers = self.peers();
        let placement = |runner: NodeId| weft_compute::schema::Placement {
            runner,
            score: 0.0,
            local_bytes: 0,
            site_bytes: 0,
            remote_bytes: 0,
            transfer_ms: 0,
            candidates: 1,
            filtered: String::new(),
            refused: Vec::new(),
        };
        let session = weft_data::Session::new(
            self.key(),
            Scope::Account,
            true,
            weft_net::now_ms(),
            600_000,
            &[],
        );
        let mine = session.to_text();
        let hostile = [
            JobKey {
                owner: self.id(),
                bucket: "../../../../tmp".into(),
                id: "0000019a2b3c4d5e".into(),
            },
            JobKey {
                owner: self.id(),
                bucket: "photos".into(),
                id: "../../../../tmp/weft-rogue-job".into(),
            },
        ];
        // Every job of every bucket the rogue can see.
        let mut theirs = Vec::new();
        if let Ok(buckets) = self.node().table().list::<Buckets>(&(), "").await {
            for (name, row) in buckets {
                let part = weft_compute::schema::JobBucket {
                    owner: row.signer,
                    bucket: name.clone(),
                };
                let Ok(jobs) = self
                    .node()
                    .table()
                    .list::<weft_compute::schema::Jobs>(&part, "")
                    .await
                else {
                    continue;
                };
                for (id, _) in jobs {
                    theirs.push(JobKey {
                        owner: row.signer,
                        bucket: name.clone(),
                        id,
                    });
                }
            }
        }
        for peer in &peers {
            let mut asks = Vec::new();
            for key in &hostile {
                asks.push(JobAsk::Offer {
                    key: key.clone(),
                    attempt: 1,
                    cpu_milli: 1,
                    memory: 1,
                });
            }
            for key in theirs.iter().chain(&hostile) {
                asks.push(JobAsk::Start {
                    key: key.clone(),
                    attempt: 1,
                    session: mine.clone(),
                    placement: placement(*peer),
                });
            }
            for ask in asks {
                report.job_asks += 1;
                if matches!(
                    self.ask(JOB_RPC, *peer, &ask).await,
                    Ok(JobAnswer::Reserved | JobAnswer::Admitted)
                ) {
                    report.job_asks_taken += 1;
                }
            }
            // A reservation made honestly, then started with the rogue's session.
            for key in &theirs {
                let offer = JobAsk::Offer {
                    key: key.clone(),
                    attempt: 1,
                    cpu_milli: 1,
                    memory: 1 << 20,
                };
                if !matches!(
                    self.ask(JOB_RPC, *peer, &offer).await,
                    Ok(JobAnswer::Reserved)
                ) {
                    continue;
                }
                let start = JobAsk::Start {
                    key: key.clone(),
                    attempt: 1,
                    session: mine.clone(),
                    placement: placement(*peer),
                };
                report.job_asks += 1;
                if matches!(
                    self.ask(JOB_RPC, *peer, &start).await,
                    Ok(JobAnswer::Admitted)
                ) {
                    report.job_asks_taken += 1;
                }
            }
            // Others' logs: with the rogue's own delegation, and with one that names the
            // job's owner but that the owner never signed.
            for key in theirs.iter().chain(&hostile) {
                let mut forged = session.public_part();
                forged.via.body.account = key.owner;
                for reader in [session.public_part(), forged] {
                    for stderr in [false, true] {
                        let ask = JobAsk::Logs {
                            key: key.clone(),
                            session: reader.to_text(),
                            stderr,
                            offset: 0,
                        };
                        report.log_reads += 1;
                        if matches!(
                            self.ask(JOB_RPC, *peer, &ask).await,
                            Ok(JobAnswer::Logs { .. })
                        ) {
                            report.log_reads_answered += 1;
                        }
                    }
                }
            }
        }
    }
}

/// A metadata write (`MetaRequest::Write`) of one row whose priors nest `depth` deep, as bytes
/// (encoding it as a value would recurse `depth` deep on this side too).
fn deep_write(depth: usize, rogue: &Rogue) -> Vec<u8> {
    let (pk, sk) = ("names", "x");
    let base = Entry::sign(rogue.key().clone(), pk, sk, rogue.now(), None);
    // An entry is its fields, then `prior` (an option), then `via` (an option): a chain is
    // each entry's fields followed by Some, down to the last one's None, then every level's
    // `via` None on the way back out.
    let whole = wire::encode(&base);
    let fields = &whole[..whole.len() - 2];
    let mut out = vec![0u8]; // MetaRequest::Write
    out.push(1); // one item
    out.push(pk.len() as u8);
    out.extend_from_slice(pk.as_bytes());
    out.push(sk.len() as u8);
    out.extend_from_slice(sk.as_bytes());
    for _ in 0..depth {
        out.extend_from_slice(fields);
        out.push(1);
    }
    out.extend_from_slice(fields);
    out.extend(std::iter::repeat_n(0u8, depth + 2));
    out
}
