//! One node's replica of the table: entries in redb, merged last-writer-wins after each row's
//! signature and writer rule are checked.
//!
//! Stored entries open with a format byte ([`ENTRY_FORMAT`]). Entries written before rows were
//! signed (no format byte) are moved aside into a `legacy` table when the replica is opened, so
//! they are never served as if signed; the node migrates what it can sign (see
//! [`LocalTable::legacy`]).

use std::collections::HashMap;
use std::path::Path;

use parking_lot::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use weft_core::wire;

use crate::hlc::Timestamp;
use crate::ring::{Partition, partition_of};
use crate::row::{Entry, Item, Refusal};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");
const LEGACY: TableDefinition<&[u8], &[u8]> = TableDefinition::new("legacy");

/// Format of stored entries (the first byte of every stored value). 2 added `via`
/// (delegations); format-1 entries are read as entries without one.
pub const ENTRY_FORMAT: u8 = 2;

/// An entry as format 1 stored it.
#[derive(Deserialize)]
struct EntryV1 {
    ts: Timestamp,
    value: Option<Vec<u8>>,
    signer: weft_core::NodeId,
    sig: weft_core::Signature,
    /// Decoded as deep as a current entry's priors, no deeper.
    #[serde(deserialize_with = "crate::row::bounded_prior")]
    prior: Option<Box<EntryV1>>,
}

impl From<EntryV1> for Entry {
    fn from(e: EntryV1) -> Entry {
        Entry {
            ts: e.ts,
            value: e.value,
            signer: e.signer,
            sig: e.sig,
            prior: e.prior.map(|p| Box::new(Entry::from(*p))),
            via: None,
        }
    }
}

/// A row as it was stored before rows were signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LegacyEntry {
    /// When it was written.
    pub ts: Timestamp,
    /// The value, or `None` if deleted.
    pub value: Option<Vec<u8>>,
}

fn encode_entry(e: &Entry) -> Vec<u8> {
    let mut out = vec![ENTRY_FORMAT];
    out.extend_from_slice(&wire::encode(e));
    out
}

fn decode_entry(bytes: &[u8]) -> Option<Entry> {
    match bytes.split_first() {
        Some((&ENTRY_FORMAT, rest)) => wire::decode(rest).ok(),
        Some((1, rest)) => wire::decode::<EntryV1>(rest).ok().map(Entry::from),
        _ => None,
    }
}

/// Whether `new` replaces `old` under last-writer-wins: a later timestamp, or the same one with
/// a greater signature (so replicas handed two versions with equal timestamps agree).
pub fn supersedes(new: &Entry, old: &Entry) -> bool {
    (new.ts, new.sig.0) > (old.ts, old.sig.0)
}

/// What a merge did.
#[derive(Debug, Default)]
pub struct Merged {
    /// Rows that changed this replica.
    pub changed: usize,
    /// Rows refused (bad signature, writer not allowed, unknown kind).
    pub refused: Vec<Refusal>,
}

/// A condition on a replica's current version of a row, for conditional writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    /// The row does not exist or is deleted (create-if-absent).
    Absent,
    /// The replica's version is no newer than this (`None`: there is none). Not enough for a
    /// read-modify-write: a version written after the read but older than another version
    /// read would pass (see [`Cond::Seen`]).
    NotNewerThan(Option<Timestamp>),
    /// The replica's version is one the writer read (by timestamp), or it has none and the
    /// writer saw a replica without one: nobody wrote the row there since the writer read it.
    Seen(Seen),
}

/// The versions of a row a read-modify-write read (at most [`Seen::MAX`] distinct ones).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// Their timestamps.
    pub versions: [Option<Timestamp>; Seen::MAX],
    /// Whether some replica read had no version at all.
    pub absent: bool,
}

impl Seen {
    /// Most versions one read can return (one per replica).
    pub const MAX: usize = 4;

    /// What a read of `versions` (and `absent`) saw; `None` if there were more than
    /// [`Seen::MAX`].
    pub fn of(versions: impl IntoIterator<Item = Timestamp>, absent: bool) -> Option<Seen> {
        let mut seen = Seen {
            versions: [None; Seen::MAX],
            absent,
        };
        for (i, ts) in versions.into_iter().enumerate() {
            *seen.versions.get_mut(i)? = Some(ts);
        }
        Some(seen)
    }
}

impl Cond {
    /// Whether `current` satisfies the condition.
    pub fn holds(&self, current: Option<&Entry>) -> bool {
        match self {
            Cond::Absent => current.is_none_or(Entry::is_tombstone),
            Cond::NotNewerThan(None) => current.is_none(),
            Cond::NotNewerThan(Some(t)) => current.is_none_or(|c| c.ts <= *t),
            Cond::Seen(seen) => match current {
                None => seen.absent,
                Some(c) => seen.versions.contains(&Some(c.ts)),
            },
        }
    }
}

/// Decides what a replica takes: whether a row may be written at all, and whether it replaces
/// the replica's current version.
pub trait Judge: Sync {
    /// Check a row before a replica takes it (`current`: the replica's version).
    fn admit(&self, item: &Item, current: Option<&Entry>) -> Result<(), Refusal>;
    /// Whether `item` replaces `current` (default: last-writer-wins, [`supersedes`]).
    fn replaces(&self, item: &Item, current: &Entry) -> bool {
        supersedes(&item.entry, current)
    }
}

impl<F: Fn(&Item, Option<&Entry>) -> Result<(), Refusal> + Sync> Judge for F {
    fn admit(&self, item: &Item, current: Option<&Entry>) -> Result<(), Refusal> {
        self(item, current)
    }
}

/// A judge, as the merge functions take it.
pub type Admit<'a> = &'a dyn Judge;

/// Local-table failures.
#[derive(Debug, thiserror::Error)]
#[error("metadata store: {0}")]
pub struct LocalError(String);

fn err(e: impl std::fmt::Display) -> LocalError {
    LocalError(e.to_string())
}

fn row_key(pk: &str, sk: &str) -> Vec<u8> {
    let mut k = partition_of(pk.as_bytes()).to_be_bytes().to_vec();
    k.extend_from_slice(pk.as_bytes());
    k.push(0);
    k.extend_from_slice(sk.as_bytes());
    k
}

/// The entry stored under `key` in `table`, if any (one this build cannot decode counts as none).
fn stored(
    table: &impl ReadableTable<&'static [u8], &'static [u8]>,
    key: &[u8],
) -> Result<Option<Entry>, LocalError> {
    Ok(table
        .get(key)
        .map_err(err)?
        .and_then(|v| decode_entry(v.value())))
}

fn split_key(k: &[u8]) -> Option<(String, String)> {
    let rest = k.get(2..)?;
    let zero = rest.iter().position(|b| *b == 0)?;
    Some((
        String::from_utf8(rest[..zero].to_vec()).ok()?,
        String::from_utf8(rest[zero + 1..].to_vec()).ok()?,
    ))
}

/// Leaves of a partition's Merkle tree: rows fall into one by the hash of their key.
pub const LEAVES: usize = 16;

/// A partition's Merkle tree, two levels: a root over [`LEAVES`] leaf hashes, each leaf a hash
/// over the keys and versions of its rows in key order. Replicas compare roots, then leaves, and
/// exchange only the rows of leaves that differ.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTree {
    /// Hash over the leaves; equal roots mean equal replicas.
    pub root: [u8; 32],
    /// Leaf hashes.
    pub leaves: Vec<[u8; 32]>,
    /// Rows in the partition (tombstones included).
    pub rows: u64,
}

impl PartitionTree {
    /// A bit per leaf that differs from `other`'s (all bits if the shapes differ).
    pub fn diff(&self, other: &PartitionTree) -> u16 {
        if self.leaves.len() != LEAVES || other.leaves.len() != LEAVES {
            return u16::MAX;
        }
        (0..LEAVES)
            .filter(|i| self.leaves[*i] != other.leaves[*i])
            .fold(0, |m, i| m | (1 << i))
    }
}

fn leaf_of(pk: &str, sk: &str) -> usize {
    let mut h = blake3::Hasher::new();
    h.update(pk.as_bytes());
    h.update(&[0]);
    h.update(sk.as_bytes());
    (h.finalize().as_bytes()[0] >> 4) as usize
}

/// A node's replica.
pub struct LocalTable {
    db: Database,
    trees: Mutex<HashMap<Partition, PartitionTree>>,
    /// [`LocalTable::tagged_keys`] per partition, until a merge changes the partition.
    tagged: Mutex<HashMap<Partition, Vec<String>>>,
}

impl LocalTable {
    /// Open or create the replica at `path`.
    pub fn open(path: &Path) -> Result<LocalTable, LocalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        {
            let mut entries = tx.open_table(ENTRIES).map_err(err)?;
            let mut legacy = tx.open_table(LEGACY).map_err(err)?;
            let mut old = Vec::new();
            for row in entries.iter().map_err(err)? {
                let (k, v) = row.map_err(err)?;
                if decode_entry(v.value()).is_none() {
                    old.push((k.value().to_vec(), v.value().to_vec()));
                }
            }
            for (k, v) in &old {
                legacy.insert(k.as_slice(), v.as_slice()).map_err(err)?;
                entries.remove(k.as_slice()).map_err(err)?;
            }
            if !old.is_empty() {
                tracing::info!(
                    rows = old.len(),
                    "unsigned metadata rows set aside for migration"
                );
            }
        }
        tx.commit().map_err(err)?;
        Ok(LocalTable {
            db,
            trees: Mutex::new(HashMap::new()),
            tagged: Mutex::new(HashMap::new()),
        })
    }

    /// Merge rows that `admit` accepts (last-writer-wins); refused rows are reported, the
    /// rest still merged. Durable when it returns.
    pub fn merge(&self, items: &[Item], admit: Admit<'_>) -> Result<Merged, LocalError> {
        let tx = self.db.begin_write().map_err(err)?;
        let mut out = Merged::default();
        {
            let mut table = tx.open_table(ENTRIES).map_err(err)?;
            for item in items {
                let key = row_key(&item.pk, &item.sk);
                let current = stored(&table, &key)?;
                if let Err(r) = admit.admit(item, current.as_ref()) {
                    out.refused.push(r);
                    continue;
                }
                if current.as_ref().is_some_and(|c| !admit.replaces(item, c)) {
                    continue; // stale or already held: nothing to do
                }
                self.changed(&item.pk);
                table
                    .insert(key.as_slice(), encode_entry(&item.entry).as_slice())
                    .map_err(err)?;
                out.changed += 1;
            }
        }
        tx.commit().map_err(err)?;
        Ok(out)
    }

    /// Merge one row, answering the version it replaced here (`Ok(None)`: there was none, or
    /// this replica already held this version or a newer one). Read and replaced in one
    /// transaction, so no version written in between goes unreported.
    pub fn merge_returning(
        &self,
        item: &Item,
        admit: Admit<'_>,
    ) -> Result<Result<Option<Entry>, Refusal>, LocalError> {
        let tx = self.db.begin_write().map_err(err)?;
        let result = {
            let mut table = tx.open_table(ENTRIES).map_err(err)?;
            let key = row_key(&item.pk, &item.sk);
            let current = stored(&table, &key)?;
            if let Err(r) = admit.admit(item, current.as_ref()) {
                Err(r)
            } else if current.as_ref().is_some_and(|c| !admit.replaces(item, c)) {
                Ok(None)
            } else {
                self.changed(&item.pk);
                table
                    .insert(key.as_slice(), encode_entry(&item.entry).as_slice())
                    .map_err(err)?;
                Ok(current)
            }
        };
        tx.commit().map_err(err)?;
        Ok(result)
    }

    /// Merge one row only if this replica's version meets `cond`. `Ok(Err(current))` when it
    /// does not (with the version that failed it).
    pub fn merge_if(
        &self,
        item: &Item,
        cond: Cond,
        admit: Admit<'_>,
    ) -> Result<Result<(), Option<Entry>>, LocalError> {
        let tx = self.db.begin_write().map_err(err)?;
        let result = {
            let mut table = tx.open_table(ENTRIES).map_err(err)?;
            let key = row_key(&item.pk, &item.sk);
            let current = stored(&table, &key)?;
            if !cond.holds(current.as_ref())
                || current.as_ref().is_some_and(|c| !admit.replaces(item, c))
            {
                Err(current)
            } else if let Err(r) = admit.admit(item, current.as_ref()) {
                return Err(LocalError(r.to_string()));
            } else {
                self.changed(&item.pk);
                table
                    .insert(key.as_slice(), encode_entry(&item.entry).as_slice())
                    .map_err(err)?;
                Ok(())
            }
        };
        tx.commit().map_err(err)?;
        Ok(result)
    }

    /// Rows stored before rows were signed, for migration: `(pk, sk, entry)`.
    pub fn legacy(&self) -> Result<Vec<(String, String, LegacyEntry)>, LocalError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(LEGACY).map_err(err)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(err)? {
            let (k, v) = row.map_err(err)?;
            if let (Some((pk, sk)), Ok(e)) = (split_key(k.value()), wire::decode(v.value())) {
                out.push((pk, sk, e));
            }
        }
        Ok(out)
    }

    /// Store a row in the format of before rows were signed, as an old version of weft did:
    /// for migration tests and tools. The next [`LocalTable::open`] sets it aside.
    pub fn import_legacy(&self, pk: &str, sk: &str, entry: &LegacyEntry) -> Result<(), LocalError> {
        let tx = self.db.begin_write().map_err(err)?;
        {
            let mut table = tx.open_table(LEGACY).map_err(err)?;
            table
                .insert(row_key(pk, sk).as_slice(), wire::encode(entry).as_slice())
                .map_err(err)?;
        }
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// Drop the legacy rows once migrated.
    pub fn clear_legacy(&self) -> Result<(), LocalError> {
        let tx = self.db.begin_write().map_err(err)?;
        tx.delete_table(LEGACY).map_err(err)?;
        tx.open_table(LEGACY).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(())
    }

    /// The entry for a row.
    pub fn get(&self, pk: &str, sk: &str) -> Result<Option<Entry>, LocalError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        let found = table.get(row_key(pk, sk).as_slice()).map_err(err)?;
        Ok(found.and_then(|v| decode_entry(v.value())))
    }

    /// Rows of `pk` whose sort key starts with `prefix` (tombstones included), in order.
    pub fn list(&self, pk: &str, prefix: &str) -> Result<Vec<Item>, LocalError> {
        self.scan(&row_key(pk, prefix))
    }

    /// Every row of a partition.
    pub fn partition(&self, p: Partition) -> Result<Vec<Item>, LocalError> {
        self.scan(&p.to_be_bytes())
    }

    /// Every row whose stored key starts with `start`, in order.
    fn scan(&self, start: &[u8]) -> Result<Vec<Item>, LocalError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        let mut out = Vec::new();
        for row in table.range(start..).map_err(err)? {
            let (k, v) = row.map_err(err)?;
            if !k.value().starts_with(start) {
                break;
            }
            if let (Some((pk, sk)), Some(entry)) = (split_key(k.value()), decode_entry(v.value())) {
                out.push(Item { pk, sk, entry });
            }
        }
        Ok(out)
    }

    /// Forget what was derived from the partition of `pk` (a merge changed it).
    fn changed(&self, pk: &str) {
        let p = partition_of(pk.as_bytes());
        self.trees.lock().remove(&p);
        self.tagged.lock().remove(&p);
    }

    /// Partitions of rows held to regions ([`crate::ring::held`]) this replica has rows of.
    pub fn held_partitions(&self) -> Result<Vec<Partition>, LocalError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        let mut out = Vec::new();
        let mut next = Some(crate::ring::PARTITIONS);
        while let Some(start) = next {
            let from = start.to_be_bytes();
            let Some(row) = table.range(from.as_slice()..).map_err(err)?.next() else {
                break;
            };
            let (k, _) = row.map_err(err)?;
            let Some(p) = k.value().get(..2).map(|b| u16::from_be_bytes([b[0], b[1]])) else {
                break;
            };
            out.push(p);
            next = p.checked_add(1);
        }
        Ok(out)
    }

    /// One partition key for each region tag the rows of partition `p` carry (tags seldom share
    /// a partition, so mostly one), for finding the partition's replicas (cached until a merge
    /// changes the partition, like its tree).
    pub fn tagged_keys(&self, p: Partition) -> Result<Vec<String>, LocalError> {
        if let Some(keys) = self.tagged.lock().get(&p) {
            return Ok(keys.clone());
        }
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        let start = p.to_be_bytes();
        let mut out: Vec<String> = Vec::new();
        for row in table.range(start.as_slice()..).map_err(err)? {
            let (k, _) = row.map_err(err)?;
            if !k.value().starts_with(&start) {
                break;
            }
            if let Some((pk, _)) = split_key(k.value()) {
                let kind = pk.split('/').next().unwrap_or_default();
                if !out.iter().any(|o| o.split('/').next() == Some(kind)) {
                    out.push(pk);
                }
            }
        }
        self.tagged.lock().insert(p, out.clone());
        Ok(out)
    }

    /// The Merkle tree of a partition (cached until a merge changes the partition).
    pub fn tree(&self, p: Partition) -> Result<PartitionTree, LocalError> {
        if let Some(t) = self.trees.lock().get(&p) {
            return Ok(t.clone());
        }
        let mut leaves: Vec<blake3::Hasher> = (0..LEAVES).map(|_| blake3::Hasher::new()).collect();
        let mut rows = 0;
        for item in self.partition(p)? {
            let h = &mut leaves[leaf_of(&item.pk, &item.sk)];
            h.update(item.pk.as_bytes());
            h.update(&[0]);
            h.update(item.sk.as_bytes());
            h.update(&[0]);
            h.update(&wire::encode(&item.entry.ts));
            h.update(&item.entry.sig.0);
            rows += 1;
        }
        let leaves: Vec<[u8; 32]> = leaves.iter().map(|h| *h.finalize().as_bytes()).collect();
        let mut root = blake3::Hasher::new();
        for l in &leaves {
            root.update(l);
        }
        let tree = PartitionTree {
            root: *root.finalize().as_bytes(),
            leaves,
            rows,
        };
        self.trees.lock().insert(p, tree.clone());
        Ok(tree)
    }

    /// The root hash of a partition: equal digests mean equal replicas.
    pub fn digest(&self, p: Partition) -> Result<[u8; 32], LocalError> {
        Ok(self.tree(p)?.root)
    }

    /// Rows of a partition in the leaves whose bits are set in `mask`.
    pub fn leaves(&self, p: Partition, mask: u16) -> Result<Vec<Item>, LocalError> {
        Ok(self
            .partition(p)?
            .into_iter()
            .filter(|i| mask & (1 << leaf_of(&i.pk, &i.sk)) != 0)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::{NodeId, SecretKey};

    fn ts(wall: u64, node: u8) -> Timestamp {
        Timestamp {
            wall,
            logical: 0,
            node: NodeId([node; 32]),
        }
    }

    fn item(pk: &str, sk: &str, wall: u64, node: u8, v: Option<&str>) -> Item {
        let key = SecretKey::from_seed([node; 32]);
        Item {
            pk: pk.into(),
            sk: sk.into(),
            entry: Entry::sign(
                &key,
                pk,
                sk,
                ts(wall, node),
                v.map(|s| s.as_bytes().to_vec()),
            ),
        }
    }

    fn anyone(_: &Item, _: Option<&Entry>) -> Result<(), Refusal> {
        Ok(())
    }

    #[test]
    fn a_read_modify_write_overwrites_only_a_version_it_read() {
        let seen = |v: &[Timestamp], absent: bool| {
            Cond::Seen(Seen::of(v.iter().copied(), absent).unwrap())
        };
        let entry =
            |t: Timestamp| Entry::sign(SecretKey::from_seed([1; 32]), "p", "s", t, Some(vec![1]));
        // The writer read versions at 5 (one replica) and 9 (another). A replica that holds
        // 7 — written after the read, older than 9 — must refuse, though 7 <= 9.
        let read = [ts(5, 1), ts(9, 2)];
        assert!(!seen(&read, false).holds(Some(&entry(ts(7, 3)))));
        assert!(Cond::NotNewerThan(Some(ts(9, 2))).holds(Some(&entry(ts(7, 3)))));
        assert!(seen(&read, false).holds(Some(&entry(ts(5, 1)))));
        assert!(seen(&read, false).holds(Some(&entry(ts(9, 2)))));
        assert!(!seen(&read, false).holds(None));
        assert!(seen(&read, true).holds(None));
        assert!(Seen::of((0..5).map(|w| ts(w, 1)), false).is_none());
    }

    #[test]
    fn last_writer_wins_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalTable::open(&dir.path().join("a.redb")).unwrap();
        let b = LocalTable::open(&dir.path().join("b.redb")).unwrap();
        let writes = [
            item("b1", "k", 5, 1, Some("x")),
            item("b1", "k", 7, 2, Some("y")),
            item("b1", "k", 6, 3, None),
        ];
        a.merge(&writes, &anyone).unwrap();
        for w in writes.iter().rev() {
            b.merge(std::slice::from_ref(w), &anyone).unwrap();
        }
        assert_eq!(a.get("b1", "k").unwrap(), b.get("b1", "k").unwrap());
        assert_eq!(
            a.get("b1", "k").unwrap().unwrap().value,
            Some(b"y".to_vec())
        );
        let p = partition_of(b"b1");
        assert_eq!(a.digest(p).unwrap(), b.digest(p).unwrap());
        a.merge(
            &[
                item("b1", "k2", 1, 1, Some("z")),
                item("b2", "k", 1, 1, Some("w")),
            ],
            &anyone,
        )
        .unwrap();
        assert_ne!(a.digest(p).unwrap(), b.digest(p).unwrap());
        // Only the leaf holding the new b1 row differs, and it alone is exchanged.
        let mask = a.tree(p).unwrap().diff(&b.tree(p).unwrap());
        assert_eq!(mask.count_ones(), 1);
        let rows = a.leaves(p, mask).unwrap();
        assert!(rows.iter().any(|i| i.sk == "k2"));
        b.merge(&rows, &anyone).unwrap();
        assert_eq!(a.digest(p).unwrap(), b.digest(p).unwrap());
        let listed: Vec<String> = a
            .list("b1", "")
            .unwrap()
            .into_iter()
            .map(|i| i.sk)
            .collect();
        assert_eq!(listed, vec!["k", "k2"]);
        assert_eq!(a.list("b1", "k2").unwrap().len(), 1);
        // Equal timestamps: both replicas keep the same version whatever the order.
        let (x, y) = (
            item("b3", "k", 9, 4, Some("p")),
            item("b3", "k", 9, 4, Some("q")),
        );
        a.merge(&[x.clone(), y.clone()], &anyone).unwrap();
        b.merge(&[y, x], &anyone).unwrap();
        assert_eq!(a.get("b3", "k").unwrap(), b.get("b3", "k").unwrap());
    }

    #[test]
    fn conditional_merges_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let a = LocalTable::open(&dir.path().join("a.redb")).unwrap();
        let first = item("b", "k", 5, 1, Some("x"));
        assert_eq!(a.merge_if(&first, Cond::Absent, &anyone).unwrap(), Ok(()));
        let second = item("b", "k", 6, 2, Some("y"));
        assert!(a.merge_if(&second, Cond::Absent, &anyone).unwrap().is_err());
        assert!(
            a.merge_if(&second, Cond::NotNewerThan(Some(ts(4, 1))), &anyone)
                .unwrap()
                .is_err()
        );
        assert_eq!(
            a.merge_if(&second, Cond::NotNewerThan(Some(first.entry.ts)), &anyone)
                .unwrap(),
            Ok(())
        );
        let no = |i: &Item, _: Option<&Entry>| {
            Err(Refusal::BadSignature {
                pk: i.pk.clone(),
                sk: i.sk.clone(),
            })
        };
        let merged = a.merge(&[item("b", "k", 9, 3, Some("z"))], &no).unwrap();
        assert_eq!((merged.changed, merged.refused.len()), (0, 1));
        assert_eq!(a.get("b", "k").unwrap().unwrap().value, Some(b"y".to_vec()));
    }

    #[test]
    fn unsigned_rows_of_older_versions_are_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.redb");
        {
            let db = Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(ENTRIES).unwrap();
                let old = LegacyEntry {
                    ts: ts(1_790_000_000_000, 1),
                    value: Some(b"v".to_vec()),
                };
                t.insert(
                    row_key("buckets", "x").as_slice(),
                    wire::encode(&old).as_slice(),
                )
                .unwrap();
            }
            tx.commit().unwrap();
        }
        let t = LocalTable::open(&path).unwrap();
        assert_eq!(t.get("buckets", "x").unwrap(), None);
        let legacy = t.legacy().unwrap();
        assert_eq!(legacy.len(), 1);
        assert_eq!(legacy[0].2.value, Some(b"v".to_vec()));
        t.clear_legacy().unwrap();
        assert!(t.legacy().unwrap().is_empty());
    }
}
