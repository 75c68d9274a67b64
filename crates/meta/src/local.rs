//! One node's replica of the table: entries in redb, merged last-writer-wins.

use std::collections::HashMap;
use std::path::Path;

use parking_lot::Mutex;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use weft_core::wire;

use crate::hlc::Timestamp;
use crate::ring::{Partition, partition_of};

const ENTRIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("entries");

/// A versioned value; `None` is a deletion (tombstone), kept so deletes win over older writes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it was written.
    pub ts: Timestamp,
    /// The value, or `None` if deleted.
    pub value: Option<Vec<u8>>,
}

/// A row: partition key, sort key, entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    /// Partition key (e.g. a bucket): all rows with the same one live in one partition.
    pub pk: String,
    /// Sort key within the partition (e.g. an object key).
    pub sk: String,
    /// The entry.
    pub entry: Entry,
}

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
}

impl LocalTable {
    /// Open or create the replica at `path`.
    pub fn open(path: &Path) -> Result<LocalTable, LocalError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let db = Database::create(path).map_err(err)?;
        let tx = db.begin_write().map_err(err)?;
        tx.open_table(ENTRIES).map_err(err)?;
        tx.commit().map_err(err)?;
        Ok(LocalTable {
            db,
            trees: Mutex::new(HashMap::new()),
        })
    }

    /// Merge rows; returns how many changed this replica. Durable when it returns.
    pub fn merge(&self, items: &[Item]) -> Result<usize, LocalError> {
        if pk_sk_invalid(items) {
            return Err(LocalError("keys must not contain NUL bytes".into()));
        }
        let tx = self.db.begin_write().map_err(err)?;
        let mut changed = 0;
        {
            let mut table = tx.open_table(ENTRIES).map_err(err)?;
            for item in items {
                let key = row_key(&item.pk, &item.sk);
                let newer = match table.get(key.as_slice()).map_err(err)? {
                    Some(old) => wire::decode::<Entry>(old.value())
                        .map_or(true, |old| item.entry.ts > old.ts),
                    None => true,
                };
                if newer {
                    self.trees.lock().remove(&partition_of(item.pk.as_bytes()));
                    table
                        .insert(key.as_slice(), wire::encode(&item.entry).as_slice())
                        .map_err(err)?;
                    changed += 1;
                }
            }
        }
        tx.commit().map_err(err)?;
        Ok(changed)
    }

    /// The entry for a row.
    pub fn get(&self, pk: &str, sk: &str) -> Result<Option<Entry>, LocalError> {
        let tx = self.db.begin_read().map_err(err)?;
        let table = tx.open_table(ENTRIES).map_err(err)?;
        let found = table.get(row_key(pk, sk).as_slice()).map_err(err)?;
        Ok(found.and_then(|v| wire::decode(v.value()).ok()))
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
            if let (Some((pk, sk)), Ok(entry)) = (split_key(k.value()), wire::decode(v.value())) {
                out.push(Item { pk, sk, entry });
            }
        }
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

fn pk_sk_invalid(items: &[Item]) -> bool {
    items
        .iter()
        .any(|i| i.pk.contains('\0') || i.sk.contains('\0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_core::NodeId;

    fn ts(wall: u64, node: u8) -> Timestamp {
        Timestamp {
            wall,
            logical: 0,
            node: NodeId([node; 32]),
        }
    }

    fn item(pk: &str, sk: &str, wall: u64, node: u8, v: Option<&str>) -> Item {
        Item {
            pk: pk.into(),
            sk: sk.into(),
            entry: Entry {
                ts: ts(wall, node),
                value: v.map(|s| s.as_bytes().to_vec()),
            },
        }
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
        a.merge(&writes).unwrap();
        for w in writes.iter().rev() {
            b.merge(std::slice::from_ref(w)).unwrap();
        }
        assert_eq!(a.get("b1", "k").unwrap(), b.get("b1", "k").unwrap());
        assert_eq!(
            a.get("b1", "k").unwrap().unwrap().value,
            Some(b"y".to_vec())
        );
        let p = partition_of(b"b1");
        assert_eq!(a.digest(p).unwrap(), b.digest(p).unwrap());
        a.merge(&[
            item("b1", "k2", 1, 1, Some("z")),
            item("b2", "k", 1, 1, Some("w")),
        ])
        .unwrap();
        assert_ne!(a.digest(p).unwrap(), b.digest(p).unwrap());
        // Only the leaf holding the new b1 row differs, and it alone is exchanged.
        let mask = a.tree(p).unwrap().diff(&b.tree(p).unwrap());
        assert_eq!(mask.count_ones(), 1);
        let rows = a.leaves(p, mask).unwrap();
        assert!(rows.iter().any(|i| i.sk == "k2"));
        b.merge(&rows).unwrap();
        assert_eq!(a.digest(p).unwrap(), b.digest(p).unwrap());
        let listed: Vec<String> = a
            .list("b1", "")
            .unwrap()
            .into_iter()
            .map(|i| i.sk)
            .collect();
        assert_eq!(listed, vec!["k", "k2"]);
        assert_eq!(a.list("b1", "k2").unwrap().len(), 1);
        assert!(a.merge(&[item("b\0", "k", 1, 1, None)]).is_err());
    }
}
