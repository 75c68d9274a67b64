//! Checking owned objects and rebuilding what they lost.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use weft_core::{ContentHash, NodeId};
use weft_fabric::MemberState;
use weft_store::{Candidate, Erasure, Manifest, PlacedSegment, Residency, place, rebuild_shards};

use crate::Healer;
use crate::registry::ManifestEntry;
use crate::schema::{CatalogRows, catalog_parts};

/// Segments rebuilt at once.
const PARALLEL: usize = 8;
/// Storage challenges one node sends per check, at most.
const AUDITS_PER_CHECK: usize = 64;
/// How long a holder has to say which shards it has.
const PRESENCE_DEADLINE: Duration = Duration::from_secs(2);
/// Copies of each manifest (as the write path makes).
const MANIFEST_COPIES: usize = 3;
/// A partition's second replica checks it too, every this many checks: its owner may be a
/// member that does not repair (down in a way the fabric has not noticed, or rogue), and an
/// object must not depend on one member to be looked after. Every change is conditional on
/// the row read, so owner and standby acting at once is safe (at worst work done twice).
const STANDBY_EVERY: u64 = 3;

/// What one check found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Objects owned.
    pub objects: u64,
    /// Segments below full redundancy.
    pub degraded: u64,
    /// Segments that could not be repaired.
    pub unrepairable: u64,
    /// Shards rebuilt.
    pub shards_repaired: u64,
    /// Bytes rebuilt.
    pub bytes_repaired: u64,
    /// Manifest copies re-made.
    pub manifests_copied: u64,
    /// Released objects whose shards were reclaimed (or are being).
    pub collected: u64,
}

/// A segment to rebuild.
struct Work {
    healthy: usize,
    manifest: ContentHash,
    segment: PlacedSegment,
    lost: Vec<usize>,
    ec: Erasure,
    policy: Residency,
}

/// Shards rebuilt for one segment: (segment, shard, new holder), bytes written.
type Rebuilt = (Vec<(u32, u16, NodeId)>, u64);

impl Healer {
    /// Nodes whose shards count as lost now: gone (dead, left, revoked) for longer than the
    /// grace period. Nodes the fabric does not know at all are lost too.
    /// Also returns the nodes that are reachable now (alive), the only ones worth asking.
    fn lost_nodes(&self) -> (HashSet<NodeId>, HashSet<NodeId>, HashSet<NodeId>) {
        let mut lost = HashSet::new();
        let mut known = HashSet::new();
        let mut up = HashSet::new();
        for m in self.storage.fabric().members() {
            let id = m.id;
            known.insert(id);
            if m.state == MemberState::Alive {
                up.insert(id);
            }
            let gone = !matches!(m.state, MemberState::Alive | MemberState::Suspect);
            if gone && m.state_for >= self.config.grace {
                lost.insert(id);
            }
        }
        (lost, known, up)
    }

    /// Check every object whose catalog partition this node owns (it is the partition's first
    /// live replica not in quarantine), and every [`STANDBY_EVERY`]th check those it stands by
    /// for (the second), and repair what needs it.
    pub async fn check_once(&self) -> CheckReport {
        let me = self.storage.id();
        let started_ms = weft_net::now_ms();
        self.refresh_reputation().await;
        let (mut lost, known, up) = self.lost_nodes();
        // A quarantined node's shards are rebuilt elsewhere, as if it were gone.
        lost.extend(self.storage.quarantined());
        let is_lost = |n: &NodeId| lost.contains(n) || !known.contains(n);
        let mut audits: HashMap<NodeId, Vec<bool>> = HashMap::new();
        let mut audit_budget = AUDITS_PER_CHECK;
        // Nodes down but within their grace period are neither judged nor asked.
        let askable = |n: &NodeId| up.contains(n);
        let mut report = CheckReport::default();
        let mut work: Vec<Work> = Vec::new();
        let mut entries: HashMap<ContentHash, ManifestEntry> = HashMap::new();
        let mut dirty: HashSet<ContentHash> = HashSet::new();
        // Every node holding a shard of an object checked here: its availability is sampled.
        let mut holders: HashSet<NodeId> = HashSet::new();
        let quarantined = self.storage.quarantined();
        let mut unreadable = Vec::new();
        let standby_turn = self.status.lock().scans % STANDBY_EVERY == STANDBY_EVERY - 1;
        for part in catalog_parts() {
            // A quarantined node is not trusted to repair (it may be the one that lost the
            // data), so the partition's next replica checks its objects instead.
            let checkers: Vec<NodeId> = self
                .registry
                .table()
                .replicas_for::<CatalogRows>(&part)
                .into_iter()
                .filter(|n| !quarantined.contains(n))
                .take(2)
                .collect();
            match checkers.iter().position(|n| *n == me) {
                Some(0) => {}
                Some(_) if standby_turn => {}
                _ => continue,
            }
            self.adopt_orphaned(part).await;
            let Ok(listing) = self.registry.list_with_deleted(part).await else {
                continue;
            };
            // Rows this node cannot read are left exactly as they are.
            unreadable.extend(listing.unreadable);
            // A row deleted while its object is still referenced was deleted by someone with
            // no business to: registered again at once, not at the next sweep.
            for hash in listing.deleted {
                if let Err(why) = self.reregister_if_referenced(hash).await {
                    tracing::warn!(manifest = %hash, %why, "a deleted catalog row could not be checked");
                }
            }
            for (hash, entry) in listing.rows {
                report.objects += 1;
                if self.collect(hash, &entry, &is_lost, &askable).await {
                    report.collected += 1;
                    continue;
                }
                let mut manifest = match self.storage.manifest_at(hash, &entry.holders).await {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(manifest = %hash, error = %e, "object check: manifest unusable");
                        report.unrepairable += 1;
                        continue;
                    }
                };
                entry.locations().apply(&mut manifest);
                holders.extend(
                    manifest
                        .segments
                        .iter()
                        .flat_map(|s| s.holders.iter().copied()),
                );
                let present = self.presence(&manifest, &askable).await;
                // A live holder that no longer has a shard it acknowledged failed to store
                // it: that counts against it like a failed audit.
                for ((node, _), has) in &present {
                    if !has {
                        audits.entry(*node).or_default().push(false);
                    }
                }
                if audit_budget > 0 {
                    audit_budget -= self
                        .audit_object(&manifest, &|n| askable(n) && !is_lost(n), &mut audits)
                        .await
                        .min(audit_budget);
                }
                for seg in &manifest.segments {
                    let lost_here: Vec<usize> = seg
                        .holders
                        .iter()
                        .enumerate()
                        .filter(|(i, n)| {
                            is_lost(n) || present.get(&(**n, seg.info.shards[*i])) == Some(&false)
                        })
                        .map(|(i, _)| i)
                        .collect();
                    if !lost_here.is_empty() {
                        work.push(Work {
                            healthy: seg.holders.len() - lost_here.len(),
                            manifest: hash,
                            segment: seg.clone(),
                            lost: lost_here,
                            ec: manifest.ec,
                            policy: manifest.policy.clone(),
                        });
                    }
                }
                if let Some(copied) = self
                    .heal_manifest(hash, &entry, &manifest, &is_lost, &askable)
                    .await
                {
                    report.manifests_copied += 1;
                    dirty.insert(hash);
                    entries.insert(hash, copied);
                } else {
                    entries.insert(hash, entry);
                }
            }
        }
        report.degraded = work.len() as u64;
        if report.degraded > 0 {
            tracing::info!(
                objects = report.objects,
                degraded = report.degraded,
                scan_ms = weft_net::now_ms().saturating_sub(started_ms),
                "object check found degraded segments"
            );
        }
        {
            let mut s = self.status.lock();
            s.queued = report.degraded;
            s.manifests_copied += report.manifests_copied;
        }
        // Riskiest first: the fewest healthy shards left.
        work.sort_by_key(|w| w.healthy);
        let started = Instant::now();
        let mut moved: HashMap<ContentHash, Vec<(u32, u16, NodeId)>> = HashMap::new();
        let mut tasks: JoinSet<(ContentHash, Result<Rebuilt, String>)> = JoinSet::new();
        let mut queue = work.into_iter();
        let mut written = 0u64;
        loop {
            while tasks.len() < PARALLEL {
                let Some(w) = queue.next() else { break };
                let this = self.clone();
                let (lost, up) = (lost.clone(), up.clone());
                tasks.spawn(async move { (w.manifest, this.rebuild(w, &lost, &up).await) });
            }
            let Some(done) = tasks.join_next().await else {
                break;
            };
            {
                let mut s = self.status.lock();
                s.queued = s.queued.saturating_sub(1);
            }
            match done {
                Ok((hash, Ok((moves, bytes)))) => {
                    report.shards_repaired += moves.len() as u64;
                    report.bytes_repaired += bytes;
                    written += bytes;
                    moved.entry(hash).or_default().extend(moves);
                }
                Ok((hash, Err(e))) => {
                    tracing::warn!(manifest = %hash, error = %e, "repair failed");
                    report.unrepairable += 1;
                    self.status.lock().repair_failures += 1;
                }
                Err(e) => tracing::warn!(error = %e, "repair task failed"),
            }
            // Rate limit: never write faster than the configured rate on average.
            let rate = self.config.repair_bytes_per_sec.max(1) as f64;
            let due = Duration::from_secs_f64(written as f64 / rate);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        for hash in moved.keys() {
            dirty.insert(*hash);
        }
        for hash in dirty {
            let Some(mine) = entries.get(&hash) else {
                continue;
            };
            // Apply this check's changes to the row as it is now, not as it was when the check
            // started, so a concurrent writer's moves (another node that briefly also thought it
            // owned the partition) are kept.
            let moves = moved.remove(&hash).unwrap_or_default();
            let changed = self
                .registry
                .update(&hash, |now| {
                    let mut entry = now.unwrap_or_else(|| mine.clone());
                    entry.holders = mine.holders.clone();
                    for (seg, shard, node) in &moves {
                        entry.set_moved(*seg, *shard, *node);
                    }
                    Some(entry)
                })
                .await;
            if let Err(e) = changed {
                tracing::warn!(manifest = %hash, error = %e, "could not record repaired pieces");
            }
        }
        let took = weft_net::now_ms().saturating_sub(started_ms);
        if took > 2000 {
            tracing::info!(
                took_ms = took,
                objects = report.objects,
                "slow object check"
            );
        }
        // Reads that got a corrupt shard from a holder count against it like failed audits.
        for (node, times) in self.storage.take_bad_reads() {
            audits
                .entry(node)
                .or_default()
                .extend(std::iter::repeat_n(false, times as usize));
        }
        self.record_audits(audits, &holders, &up).await;
        if !unreadable.is_empty() {
            tracing::warn!(
                rows = unreadable.len(),
                first = %unreadable[0],
                "catalog rows this node cannot read were left alone (written by a newer weft, or corrupt)"
            );
        }
        let mut s = self.status.lock();
        s.unreadable_rows = unreadable.len() as u64;
        if let Some(first) = unreadable.first() {
            s.last_unreadable = first.clone();
        }
        s.scans += 1;
        s.last_scan_ms = weft_net::now_ms();
        s.last_scan_started_ms = started_ms;
        s.objects_owned = report.objects;
        s.segments_degraded = report.degraded;
        s.segments_unrepairable = report.unrepairable;
        s.shards_repaired += report.shards_repaired;
        s.bytes_repaired += report.bytes_repaired;
        if report.bytes_repaired > 0 {
            s.repair_secs += started.elapsed().as_secs_f64();
            s.last_repair_finished_ms = weft_net::now_ms();
            s.last_repair_started_ms = s
                .last_repair_finished_ms
                .saturating_sub(started.elapsed().as_millis() as u64);
        }
        s.queued = 0;
        if report.shards_repaired > 0 {
            tracing::info!(
                shards = report.shards_repaired,
                bytes = report.bytes_repaired,
                secs = started.elapsed().as_secs_f64(),
                "repaired shards"
            );
        }
        report
    }

    /// Challenge each live holder of an object for one random shard it holds. Returns how
    /// many challenges were sent; a holder that could not be reached is not judged.
    async fn audit_object(
        &self,
        manifest: &Manifest,
        auditable: &impl Fn(&NodeId) -> bool,
        results: &mut HashMap<NodeId, Vec<bool>>,
    ) -> usize {
        let mut held: HashMap<NodeId, Vec<(ContentHash, u64)>> = HashMap::new();
        for seg in &manifest.segments {
            for (i, n) in seg.holders.iter().enumerate() {
                if auditable(n) {
                    held.entry(*n)
                        .or_default()
                        .push((seg.info.shards[i], seg.info.shard_len));
                }
            }
        }
        let mut sent = 0;
        for (node, shards) in held {
            let mut pick = [0u8; 4];
            if getrandom_fill(&mut pick).is_err() {
                continue;
            }
            let (hash, len) = shards[u32::from_le_bytes(pick) as usize % shards.len()];
            sent += 1;
            let audit = self.storage.audit(node, hash, len);
            if let Ok(Ok(passed)) = tokio::time::timeout(PRESENCE_DEADLINE * 2, audit).await {
                results.entry(node).or_default().push(passed);
            }
        }
        sent
    }

    /// Ask each live holder which of its shards of this object it still has.
    async fn presence(
        &self,
        manifest: &Manifest,
        askable: &impl Fn(&NodeId) -> bool,
    ) -> HashMap<(NodeId, ContentHash), bool> {
        let mut by_node: HashMap<NodeId, Vec<ContentHash>> = HashMap::new();
        for seg in &manifest.segments {
            for (i, n) in seg.holders.iter().enumerate() {
                if askable(n) {
                    by_node.entry(*n).or_default().push(seg.info.shards[i]);
                }
            }
        }
        // All holders at once, each with a short deadline: a holder that cannot answer now (it
        // may have just died, or be restarting) is not judged on it; the grace period decides.
        let mut asks = JoinSet::new();
        for (node, hashes) in by_node {
            let this = self.clone();
            asks.spawn(async move {
                let mut answers = Vec::new();
                for chunk in hashes.chunks(weft_store::protocol::MAX_HAS) {
                    let ask = this.storage.has_shards(node, chunk.to_vec());
                    match tokio::time::timeout(PRESENCE_DEADLINE, ask).await {
                        Ok(Ok(answer)) => answers.extend(chunk.iter().copied().zip(answer)),
                        _ => break,
                    }
                }
                (node, answers)
            });
        }
        let mut out = HashMap::new();
        while let Some(done) = asks.join_next().await {
            if let Ok((node, answers)) = done {
                for (h, has) in answers {
                    out.insert((node, h), has);
                }
            }
        }
        out
    }

    /// Re-make missing manifest copies; returns the updated entry if any were made.
    async fn heal_manifest(
        &self,
        hash: ContentHash,
        entry: &ManifestEntry,
        manifest: &Manifest,
        is_lost: &impl Fn(&NodeId) -> bool,
        askable: &impl Fn(&NodeId) -> bool,
    ) -> Option<ManifestEntry> {
        let mut holders: Vec<NodeId> = Vec::new();
        for n in &entry.holders {
            if is_lost(n) {
                continue;
            }
            if askable(n)
                && let Ok(Ok(answer)) =
                    tokio::time::timeout(PRESENCE_DEADLINE, self.storage.has_shards(*n, vec![hash]))
                        .await
                && answer.first() == Some(&false)
            {
                continue;
            }
            holders.push(*n);
        }
        let candidates = self.eligible(&manifest.policy, &holders);
        let want = MANIFEST_COPIES.min(holders.len() + candidates.len());
        if holders.len() >= want || holders.len() == entry.holders.len() {
            return None;
        }
        // The manifest as stored is the one originally written (its hash names it); moves
        // live in the catalog entry, not in the bytes.
        let Ok(Some(original)) = self.fetch_manifest_bytes(hash, &holders).await else {
            return None;
        };
        let original = Arc::new(original);
        let mut entry = entry.clone();
        while holders.len() < want {
            let rest = self.eligible(&manifest.policy, &holders);
            let Ok(pick) = place(&hash, 1, original.len() as u64, &rest, &manifest.policy) else {
                break;
            };
            if self
                .storage
                .put_shard(pick[0], hash, original.clone())
                .await
                .is_err()
            {
                break;
            }
            holders.push(pick[0]);
        }
        entry.holders = holders;
        Some(entry)
    }

    async fn fetch_manifest_bytes(
        &self,
        hash: ContentHash,
        holders: &[NodeId],
    ) -> Result<Option<Vec<u8>>, String> {
        for n in self.storage.nearest_first(holders) {
            if let Ok(Some(b)) = self.storage.get_shard(n, hash).await
                && ContentHash::of(&b) == hash
            {
                return Ok(Some(b));
            }
        }
        Ok(None)
    }

    /// Healthy storage nodes the policy allows (within its maximum price), other than `exclude`.
    fn eligible(&self, policy: &Residency, exclude: &[NodeId]) -> Vec<Candidate> {
        self.storage
            .candidates()
            .into_iter()
            .filter(|c| c.healthy && policy.admits(c) && !exclude.contains(&c.id))
            .collect()
    }

    /// Rebuild a segment's lost shards from any k good ones and place them on new nodes.
    async fn rebuild(
        &self,
        w: Work,
        lost: &HashSet<NodeId>,
        up: &HashSet<NodeId>,
    ) -> Result<Rebuilt, String> {
        let seg = &w.segment;
        let k = w.ec.data;
        // Fetch k shards at once, nearest holders first (this node's own copy costs no
        // transfer); each failure brings in the next holder.
        let survivors: Vec<usize> = seg
            .holders
            .iter()
            .enumerate()
            .filter(|(i, n)| !w.lost.contains(i) && up.contains(n))
            .map(|(i, _)| i)
            .collect();
        let order: Vec<usize> = self
            .storage
            .nearest_first(
                &survivors
                    .iter()
                    .map(|i| seg.holders[*i])
                    .collect::<Vec<_>>(),
            )
            .into_iter()
            .flat_map(|n| {
                survivors
                    .iter()
                    .copied()
                    .filter(move |i| seg.holders[*i] == n)
                    .collect::<Vec<_>>()
            })
            .collect();
        let mut order = order.into_iter();
        let mut fetches = JoinSet::new();
        let spawn = |fetches: &mut JoinSet<_>, i: usize| {
            let (this, node, hash) = (self.clone(), seg.holders[i], seg.info.shards[i]);
            fetches.spawn(async move { (i, hash, this.storage.get_shard(node, hash).await) });
        };
        for i in order.by_ref().take(k) {
            spawn(&mut fetches, i);
        }
        let mut good: Vec<(usize, Vec<u8>)> = Vec::new();
        while let Some(done) = fetches.join_next().await {
            match done {
                Ok((i, hash, Ok(Some(bytes)))) if ContentHash::of(&bytes) == hash => {
                    good.push((i, bytes));
                    if good.len() >= k {
                        break;
                    }
                }
                _ => {
                    if let Some(i) = order.next() {
                        spawn(&mut fetches, i);
                    }
                }
            }
        }
        fetches.abort_all();
        if good.len() < k {
            return Err(format!(
                "segment {}: only {} of the {k} shards needed could be fetched",
                seg.info.index,
                good.len()
            ));
        }
        let (info, ec) = (seg.info.clone(), w.ec);
        let shards = tokio::task::spawn_blocking(move || {
            let supplied: Vec<(usize, &[u8])> =
                good.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            rebuild_shards(&info, ec, &supplied)
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        // New holders: allowed by the policy, healthy, not holding another shard of this
        // segment; placement spreads them over sites.
        let mut holders: Vec<NodeId> = seg
            .holders
            .iter()
            .enumerate()
            .filter(|(i, _)| !w.lost.contains(i))
            .map(|(_, n)| *n)
            .collect();
        let mut moves = Vec::new();
        let mut bytes = 0u64;
        for &i in &w.lost {
            let hash = seg.info.shards[i];
            let shard = Arc::new(shards[i].clone());
            let old = seg.holders[i];
            // Where to put it, in order of preference: a node holding nothing of this segment
            // (not the one that lost it); the node that lost it, if it is still a healthy
            // holder (a file lost from disk); and last, in a small fabric after a loss, a live
            // node that already holds another shard (the shard count is restored; one node's
            // loss then costs two shards).
            let mut tried: Vec<NodeId> = holders.clone();
            tried.push(old);
            let mut stored: Option<NodeId> = None;
            for _ in 0..3 {
                let rest = self.eligible(&w.policy, &tried);
                let Ok(pick) = place(&hash, 1, shard.len() as u64, &rest, &w.policy) else {
                    break;
                };
                if self
                    .storage
                    .put_shard(pick[0], hash, shard.clone())
                    .await
                    .is_ok()
                {
                    stored = Some(pick[0]);
                    break;
                }
                tried.push(pick[0]);
            }
            let old_is_healthy =
                !lost.contains(&old) && self.eligible(&w.policy, &[]).iter().any(|c| c.id == old);
            if stored.is_none()
                && old_is_healthy
                && self
                    .storage
                    .put_shard(old, hash, shard.clone())
                    .await
                    .is_ok()
            {
                bytes += shard.len() as u64;
                continue;
            }
            if stored.is_none() {
                let doubled: Vec<Candidate> = self
                    .eligible(&w.policy, &[])
                    .into_iter()
                    .filter(|c| holders.contains(&c.id) && !lost.contains(&c.id))
                    .collect();
                if let Ok(pick) = place(&hash, 1, shard.len() as u64, &doubled, &w.policy)
                    && self
                        .storage
                        .put_shard(pick[0], hash, shard.clone())
                        .await
                        .is_ok()
                {
                    stored = Some(pick[0]);
                }
            }
            let Some(node) = stored else {
                return Err(format!(
                    "segment {}: no eligible node could take shard {i}",
                    seg.info.index
                ));
            };
            holders.push(node);
            moves.push((seg.info.index, i as u16, node));
            bytes += shard.len() as u64;
        }
        Ok((moves, bytes))
    }

    /// Write again, under this node's key, the catalog rows of partition `part` whose signer
    /// is no longer a member (a revoked node registered them): they verify nowhere any more,
    /// so their objects would be neither repaired nor protected. A catalog row is a member's
    /// word and deletes nothing, so vouching for one a former member wrote gives nobody more
    /// than it had; rows that do not validate are left alone.
    pub(crate) async fn adopt_orphaned(&self, part: u8) {
        for (sk, entry) in self.registry.table().orphaned_rows::<CatalogRows>(&part) {
            let Ok(hash) = sk.parse::<ContentHash>() else {
                continue;
            };
            if entry.validate().is_err() {
                continue;
            }
            match self.registry.put(&hash, &entry).await {
                Ok(()) => {
                    tracing::info!(manifest = %hash, "catalog row of a former member written again")
                }
                Err(e) => {
                    tracing::warn!(manifest = %hash, error = %e, "could not write again a former member's catalog row")
                }
            }
        }
    }
}

fn getrandom_fill(buf: &mut [u8]) -> Result<(), ()> {
    use std::hash::{BuildHasher, Hasher};
    // Audit targets need to be unpredictable to holders, not secret: the standard library's
    // randomly keyed hasher, fed the time, is enough.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_err(|_| ())?
            .as_nanos(),
    );
    let v = h.finish().to_le_bytes();
    for (i, b) in buf.iter_mut().enumerate() {
        *b = v[i % 8];
    }
    Ok(())
}
