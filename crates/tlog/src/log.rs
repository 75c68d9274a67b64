//! A log kept durably in files, in the tlog-tiles layout: entries are *integrated* (their
//! bundles and hash tiles written and synced), then *published* by writing a signed
//! checkpoint of the new size. Only a published size is ever read back: entries integrated
//! but not published when the process stopped were never acknowledged, and the next
//! integration writes over them. Tiles up to a published size are never rewritten.
//!
//! Memory is bounded: the rightmost tile of each level (at most 256 hashes), the rightmost
//! bundle (at most 256 entries) and a cache of at most [`CACHED_TILES`] full tiles.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::hash::{Hash, leaf_hash};
use crate::note::{Checkpoint, Note};
use crate::tiles::{
    MAX_ENTRY, TILE_HEIGHT, TILE_WIDTH, decode_bundle, encode_bundle, entries_path, tile_path,
};
use crate::tree::{self, Frontier, Subtrees};

/// Full tiles kept in memory (8 KiB each).
pub const CACHED_TILES: usize = 4096;

/// The file that holds the published checkpoint.
pub const CHECKPOINT_FILE: &str = "checkpoint";

/// What went wrong with a log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// A file could not be read or written.
    #[error("log file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A file holds something other than what the log wrote.
    #[error("log file {path} is corrupt: {why}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// How.
        why: String,
    },
    /// An entry is larger than a bundle can hold.
    #[error("a log entry is {0} bytes; at most 65535 fit")]
    EntryTooLarge(usize),
    /// A checkpoint to publish is not of the tree integrated.
    #[error("the checkpoint is not of the integrated tree (size {size})")]
    NotThisTree {
        /// The integrated size.
        size: u64,
    },
    /// An index or size beyond the tree.
    #[error("{what} {asked} is beyond the log of {size} entries")]
    OutOfRange {
        /// What was asked.
        what: &'static str,
        /// The value asked.
        asked: u64,
        /// The log's size.
        size: u64,
    },
}

/// A log in a directory.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    frontier: Frontier,
    /// Per tile level, the hashes of its rightmost tile that is not full.
    edge: Vec<Vec<Hash>>,
    /// The entries of the rightmost bundle that is not full.
    bundle: Vec<Vec<u8>>,
    /// The published checkpoint note and its size.
    published: Option<(String, u64)>,
    full: HashMap<(u8, u64), Arc<Vec<Hash>>>,
    /// Partial-tile folders to remove once a size at least this is published.
    cleanup: Vec<(u64, PathBuf)>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn corrupt(path: &Path, why: impl Into<String>) -> LogError {
    LogError::Corrupt {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn hashes_of(path: &Path, bytes: &[u8], width: u64) -> Result<Vec<Hash>, LogError> {
    if bytes.len() as u64 != width * 32 {
        return Err(corrupt(
            path,
            format!("{} bytes, not {width} hashes", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(32)
        .map(|c| {
            let mut h = [0; 32];
            h.copy_from_slice(c);
            Hash(h)
        })
        .collect())
}

fn tile_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.iter().flat_map(|h| h.0).collect()
}

impl Log {
    /// Open the log in `dir` (created if missing) at its published size.
    pub fn open(dir: &Path) -> Result<Log, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut log = Log {
            dir: dir.to_path_buf(),
            frontier: Frontier::default(),
            edge: Vec::new(),
            bundle: Vec::new(),
            published: None,
            full: HashMap::new(),
            cleanup: Vec::new(),
        };
        let path = dir.join(CHECKPOINT_FILE);
        let size = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let note = Note::parse(&text).map_err(|e| corrupt(&path, e.to_string()))?;
                let checkpoint =
                    Checkpoint::parse(&note.text).map_err(|e| corrupt(&path, e.to_string()))?;
                log.published = Some((text, checkpoint.size));
                checkpoint.size
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&path)(e)),
        };
        // The rightmost tile of each level, then the frontier from the tiles.
        let mut level = 0u8;
        while u32::from(level) * u32::from(TILE_HEIGHT) < 64 && size >> (level * TILE_HEIGHT) > 0 {
            let hashes = size >> (level * TILE_HEIGHT);
            let width = hashes % TILE_WIDTH;
            let edge = if width > 0 {
                let rel = tile_path(level, hashes / TILE_WIDTH, width);
                let path = dir.join(&rel);
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                hashes_of(&path, &bytes, width)?
            } else {
                Vec::new()
            };
            log.edge.push(edge);
            level += 1;
        }
        let mut reader = Reader {
            log: &mut log,
            size,
        };
        let frontier = Frontier::of(&mut reader, size)?;
        if let Some((text, _)) = &log.published {
            let root = Note::parse(text)
                .ok()
                .and_then(|n| Checkpoint::parse(&n.text).ok())
                .map(|c| c.root);
            if root != Some(frontier.root()) {
                return Err(corrupt(
                    dir,
                    "the tiles do not hash to the checkpoint's root",
                ));
            }
        }
        log.frontier = frontier;
        let width = size % TILE_WIDTH;
        if width > 0 {
            let path = dir.join(entries_path(size / TILE_WIDTH, width));
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let entries = decode_bundle(&bytes).ok_or_else(|| corrupt(&path, "not a bundle"))?;
            if entries.len() as u64 != width {
                return Err(corrupt(&path, "holds the wrong number of entries"));
            }
            log.bundle = entries;
        }
        Ok(log)
    }

    /// The integrated size (published or about to be).
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// The integrated tree's hash.
    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    /// The published size.
    pub fn published_size(&self) -> u64 {
        self.published.as_ref().map_or(0, |p| p.1)
    }

    /// The published checkpoint note.
    pub fn checkpoint(&self) -> Option<&str> {
        self.published.as_ref().map(|p| p.0.as_str())
    }

    /// Integrate `entries`: write their bundles and the hash tiles they change, and sync
    /// them. Returns the index of the first. Nothing is readable until [`Log::publish`]; on
    /// an error the log goes back to its published size.
    pub fn integrate<E: AsRef<[u8]>>(&mut self, entries: &[E]) -> Result<u64, LogError> {
        if let Some(e) = entries.iter().find(|e| e.as_ref().len() > MAX_ENTRY) {
            return Err(LogError::EntryTooLarge(e.as_ref().len()));
        }
        let first = self.size();
        let result = self.write_entries(entries);
        if result.is_err() {
            let dir = self.dir.clone();
            *self = Log::open(&dir)?;
        }
        result.map(|()| first)
    }

    fn write_entries<E: AsRef<[u8]>>(&mut self, entries: &[E]) -> Result<(), LogError> {
        let old = self.size();
        let mut writes: Vec<(String, Vec<u8>)> = Vec::new();
        let Log {
            frontier,
            edge,
            bundle,
            full,
            cleanup,
            ..
        } = self;
        for entry in entries {
            let entry = entry.as_ref();
            bundle.push(entry.to_vec());
            if bundle.len() as u64 == TILE_WIDTH {
                let index = frontier.size() / TILE_WIDTH;
                writes.push((
                    entries_path(index, TILE_WIDTH),
                    encode_bundle(bundle.iter().map(Vec::as_slice)),
                ));
                cleanup.push((
                    (index + 1) * TILE_WIDTH,
                    PathBuf::from(format!("{}.p", entries_path(index, TILE_WIDTH))),
                ));
                bundle.clear();
            }
            frontier.push(leaf_hash(entry), |level, index, hash| {
                if level % TILE_HEIGHT != 0 {
                    return;
                }
                let tile_level = level / TILE_HEIGHT;
                while edge.len() <= usize::from(tile_level) {
                    edge.push(Vec::new());
                }
                let tile = &mut edge[usize::from(tile_level)];
                tile.push(hash);
                if tile.len() as u64 == TILE_WIDTH {
                    let tile_index = index / TILE_WIDTH;
                    let path = tile_path(tile_level, tile_index, TILE_WIDTH);
                    writes.push((path.clone(), tile_bytes(tile)));
                    let leaves_covered = (tile_index + 1)
                        .checked_shl(u32::from(level) + 8)
                        .unwrap_or(u64::MAX);
                    cleanup.push((leaves_covered, PathBuf::from(format!("{path}.p"))));
                    if full.len() >= CACHED_TILES {
                        full.clear();
                    }
                    full.insert((tile_level, tile_index), Arc::new(std::mem::take(tile)));
                }
            });
        }
        let new = self.size();
        for (level, tile) in self.edge.iter().enumerate() {
            let shift = level as u32 * u32::from(TILE_HEIGHT);
            if tile.is_empty() || old >> shift == new >> shift {
                continue;
            }
            let hashes = new >> shift;
            writes.push((
                tile_path(level as u8, hashes / TILE_WIDTH, tile.len() as u64),
                tile_bytes(tile),
            ));
        }
        if !self.bundle.is_empty() && new > old {
            writes.push((
                entries_path(new / TILE_WIDTH, self.bundle.len() as u64),
                encode_bundle(self.bundle.iter().map(Vec::as_slice)),
            ));
        }
        let mut dirs = Vec::new();
        for (rel, bytes) in &writes {
            write_synced(&self.dir, rel, bytes, &mut dirs)?;
        }
        dirs.sort();
        dirs.dedup();
        for dir in dirs {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// The size and tree hash the log would have with `entries` integrated (nothing written).
    pub fn preview<E: AsRef<[u8]>>(&self, entries: &[E]) -> (u64, Hash) {
        let mut frontier = self.frontier.clone();
        for entry in entries {
            frontier.push(leaf_hash(entry.as_ref()), |_, _, _| {});
        }
        (frontier.size(), frontier.root())
    }

    /// Drop what was integrated but not published: the log is again at its published size.
    pub fn abandon(&mut self) -> Result<(), LogError> {
        if self.size() != self.published_size() {
            let dir = self.dir.clone();
            *self = Log::open(&dir)?;
        }
        Ok(())
    }

    /// Every entry of the published log from `from` on, bundle by bundle (for rebuilding an
    /// index when a log opens): `each(index, entry)`.
    pub fn scan(
        &mut self,
        from: u64,
        mut each: impl FnMut(u64, &[u8]) -> Result<(), LogError>,
    ) -> Result<(), LogError> {
        let size = self.published_size();
        let mut index = from;
        while index < size {
            let bundle = index / TILE_WIDTH;
            let width = (size - bundle * TILE_WIDTH).min(TILE_WIDTH);
            let rel = entries_path(bundle, width);
            let bytes = self
                .read_tile(&rel)?
                .ok_or_else(|| corrupt(&self.dir.join(&rel), "missing"))?;
            let entries = decode_bundle(&bytes)
                .ok_or_else(|| corrupt(&self.dir.join(&rel), "not a bundle"))?;
            for (i, entry) in entries.iter().enumerate() {
                let at = bundle * TILE_WIDTH + i as u64;
                if at >= index {
                    each(at, entry)?;
                }
            }
            index = bundle * TILE_WIDTH + width;
        }
        Ok(())
    }

    /// Publish `note`, a signed checkpoint of the integrated tree or of a prefix of it (never
    /// below what is published): it is what [`Log::open`] reads back.
    pub fn publish(&mut self, note: &Note) -> Result<(), LogError> {
        let checkpoint = Checkpoint::parse(&note.text)
            .map_err(|_| LogError::NotThisTree { size: self.size() })?;
        let not_this = LogError::NotThisTree { size: self.size() };
        if checkpoint.size > self.size()
            || checkpoint.size < self.published_size()
            || self.root_at(checkpoint.size)? != checkpoint.root
        {
            return Err(not_this);
        }
        let text = note.encode();
        let mut dirs = Vec::new();
        write_synced(&self.dir, CHECKPOINT_FILE, text.as_bytes(), &mut dirs)?;
        sync_dir(&self.dir)?;
        self.published = Some((text, checkpoint.size));
        let size = checkpoint.size;
        let dir = self.dir.clone();
        self.cleanup.retain(|(after, rel)| {
            if *after > size {
                return true;
            }
            // Partial tiles are garbage once their full tile is published.
            let _ = std::fs::remove_dir_all(dir.join(rel));
            false
        });
        Ok(())
    }

    fn check(&self, what: &'static str, asked: u64, limit: u64) -> Result<(), LogError> {
        if asked >= limit {
            return Err(LogError::OutOfRange {
                what,
                asked,
                size: self.size(),
            });
        }
        Ok(())
    }

    /// Entry `index` of the integrated log. (What a log serves to others is its published
    /// part: the caller keeps to it.)
    pub fn entry(&mut self, index: u64) -> Result<Vec<u8>, LogError> {
        self.check("entry", index, self.size())?;
        let bundle = index / TILE_WIDTH;
        if bundle == self.size() / TILE_WIDTH
            && let Some(entry) = self.bundle.get((index % TILE_WIDTH) as usize)
        {
            return Ok(entry.clone());
        }
        let path = self.dir.join(entries_path(bundle, TILE_WIDTH));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut entries = decode_bundle(&bytes).ok_or_else(|| corrupt(&path, "not a bundle"))?;
        let at = (index % TILE_WIDTH) as usize;
        if entries.len() as u64 != TILE_WIDTH {
            return Err(corrupt(&path, "a full bundle without 256 entries"));
        }
        let entry = std::mem::take(&mut entries[at]);
        if self.reader().subtree(0, index)? != leaf_hash(&entry) {
            return Err(corrupt(
                &path,
                format!("entry {index} is not the one the tree holds"),
            ));
        }
        Ok(entry)
    }

    /// The tree hash at `size` (at most the integrated size).
    pub fn root_at(&mut self, size: u64) -> Result<Hash, LogError> {
        self.check("size", size, self.size() + 1)?;
        tree::tree_hash(&mut self.reader(), size)
    }

    /// The inclusion proof of entry `index` in the tree of `size` entries (at most the
    /// integrated size).
    pub fn inclusion_proof(&mut self, index: u64, size: u64) -> Result<Vec<Hash>, LogError> {
        self.check("size", size, self.size() + 1)?;
        self.check("entry", index, size)?;
        tree::inclusion_proof(&mut self.reader(), index, size)
    }

    /// The consistency proof from the tree of `old` entries to that of `new` (at most the
    /// integrated size).
    pub fn consistency_proof(&mut self, old: u64, new: u64) -> Result<Vec<Hash>, LogError> {
        self.check("size", new, self.size() + 1)?;
        self.check("size", old, new + 1)?;
        tree::consistency_proof(&mut self.reader(), old, new)
    }

    /// The consistency proof from the published tree of `old` entries to the integrated tree:
    /// what a sequencer shows witnesses before it publishes.
    pub fn proof_to_integrated(&mut self, old: u64) -> Result<Vec<Hash>, LogError> {
        self.check("size", old, self.published_size() + 1)?;
        let integrated = self.size();
        self.consistency_proof(old, integrated)
    }

    /// The log's tiles as a proof source, at the integrated size.
    fn reader(&mut self) -> Reader<'_> {
        let size = self.size();
        Reader { log: self, size }
    }

    /// The bytes of a tile or bundle of the published log by its tlog-tiles path (what a
    /// tile server would answer), or `None` if the path names nothing published.
    pub fn read_tile(&self, rel: &str) -> Result<Option<Vec<u8>>, LogError> {
        let Some((level, index, width)) = parse_tile_path(rel) else {
            return Ok(None);
        };
        let size = self.published_size();
        let have = match level {
            None => size.saturating_sub(index * TILE_WIDTH).min(TILE_WIDTH),
            Some(level) => crate::tiles::tile_width(level, index, size),
        };
        if width > have || width == 0 {
            return Ok(None);
        }
        // A partial tile of a now-full tile may have been cleaned up: cut the full one.
        let path = self.dir.join(rel);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && width < have => {
                let full = match level {
                    None => entries_path(index, have),
                    Some(level) => tile_path(level, index, have),
                };
                let path = self.dir.join(full);
                let bytes = std::fs::read(&path).map_err(io(&path))?;
                Ok(Some(match level {
                    Some(_) => bytes[..(width as usize * 32).min(bytes.len())].to_vec(),
                    None => {
                        let entries =
                            decode_bundle(&bytes).ok_or_else(|| corrupt(&path, "not a bundle"))?;
                        encode_bundle(entries.iter().take(width as usize).map(Vec::as_slice))
                    }
                }))
            }
            Err(e) => Err(io(&path)(e)),
        }
    }
}

/// `tile/<L>/<N>[.p/<W>]` or `tile/entries/<N>[.p/<W>]`: `(level or None for entries, index,
/// width)`. Strict: only the canonical form, so no path can name anything else.
fn parse_tile_path(rel: &str) -> Option<(Option<u8>, u64, u64)> {
    let rest = rel.strip_prefix("tile/")?;
    let (kind, rest) = rest.split_once('/')?;
    let level = match kind {
        "entries" => None,
        l => Some(
            l.parse::<u8>()
                .ok()
                .filter(|l| l.to_string() == kind && *l < 8)?,
        ),
    };
    let (index_part, width) = match rest.split_once(".p/") {
        Some((i, w)) => {
            let width: u64 = w.parse().ok()?;
            if w != width.to_string() || width == 0 || width >= TILE_WIDTH {
                return None;
            }
            (i, width)
        }
        None => (rest, TILE_WIDTH),
    };
    let parts: Vec<&str> = index_part.split('/').collect();
    if parts.len() > 7 {
        return None;
    }
    let mut index = 0u64;
    for (i, part) in parts.iter().enumerate() {
        let digits = if i + 1 < parts.len() {
            part.strip_prefix('x')?
        } else {
            part
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    (crate::tiles::index_path(index) == index_part).then_some((level, index, width))
}

/// The log's tiles as a proof source; `size` is the size its in-memory edge tiles are of
/// (which decides which tile of each level is read from memory).
struct Reader<'a> {
    log: &'a mut Log,
    size: u64,
}

impl Subtrees for Reader<'_> {
    type Error = LogError;

    fn subtree(&mut self, level: u8, index: u64) -> Result<Hash, LogError> {
        let tile_level = level / TILE_HEIGHT;
        let sub = level % TILE_HEIGHT;
        let start = index << sub;
        let offset = (start % TILE_WIDTH) as usize;
        let hashes = self.tile(tile_level, start / TILE_WIDTH)?;
        hashes
            .get(offset..offset + (1usize << sub))
            .map(tree::root_of)
            .ok_or_else(|| corrupt(&self.log.dir, "a tile is shorter than the tree needs"))
    }
}

impl Reader<'_> {
    /// Hash tile `tile` of tile level `level`: the edge from memory, a full one from the cache
    /// or from its file — checked against its hash in the tile above, so a changed file is
    /// found before any proof is made from it (the top is checked against the checkpoint
    /// when the log opens).
    fn tile(&mut self, level: u8, tile: u64) -> Result<Arc<Vec<Hash>>, LogError> {
        let shift = u32::from(level) * u32::from(TILE_HEIGHT);
        if tile == (self.size >> shift) / TILE_WIDTH {
            let edge = self.log.edge.get(usize::from(level)).cloned();
            return Ok(Arc::new(edge.unwrap_or_default()));
        }
        if let Some(hashes) = self.log.full.get(&(level, tile)) {
            return Ok(hashes.clone());
        }
        let path = self.log.dir.join(tile_path(level, tile, TILE_WIDTH));
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let hashes = hashes_of(&path, &bytes, TILE_WIDTH)?;
        if level + 1 < 8 {
            let above = self.tile(level + 1, tile / TILE_WIDTH)?;
            if above.get((tile % TILE_WIDTH) as usize) != Some(&tree::root_of(&hashes)) {
                return Err(corrupt(
                    &path,
                    "it does not hash to its hash in the tile above",
                ));
            }
        }
        let hashes = Arc::new(hashes);
        if self.log.full.len() >= CACHED_TILES {
            self.log.full.clear();
        }
        self.log.full.insert((level, tile), hashes.clone());
        Ok(hashes)
    }
}

fn write_synced(
    root: &Path,
    rel: &str,
    bytes: &[u8],
    dirs: &mut Vec<PathBuf>,
) -> Result<(), LogError> {
    let path = root.join(rel);
    let parent = path.parent().unwrap_or(root).to_path_buf();
    if !parent.exists() {
        std::fs::create_dir_all(&parent).map_err(io(&parent))?;
        let mut up = parent.as_path();
        while let Some(above) = up.parent() {
            if !above.starts_with(root) {
                break;
            }
            dirs.push(above.to_path_buf());
            up = above;
        }
    }
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(bytes).map_err(io(&tmp))?;
    file.sync_data().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    dirs.push(parent);
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    std::fs::File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::Signer;
    use crate::tree::{root_of, verify_consistency, verify_inclusion};
    use weft_core::SecretKey;

    fn signer() -> Signer {
        Signer::new("test/log", SecretKey::from_seed([9; 32])).unwrap()
    }

    fn publish(log: &mut Log) -> Note {
        let checkpoint = Checkpoint {
            origin: "test/log".into(),
            size: log.size(),
            root: log.root(),
            extensions: vec![],
        };
        let note = signer().sign(&checkpoint.text()).unwrap();
        log.publish(&note).unwrap();
        note
    }

    fn entry(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    #[test]
    fn a_log_across_tile_levels_proves_every_entry_and_reopens_at_its_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        let mut leaves = Vec::new();
        let mut published = vec![(0u64, Hash::empty())];
        // Batches of uneven sizes, across the first full level-1 tile (65536 entries).
        let mut seed = 7u64;
        while leaves.len() < 66_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let n = 1 + (seed >> 33) % 3000;
            let batch: Vec<Vec<u8>> = (0..n).map(|i| entry(leaves.len() as u64 + i)).collect();
            let first = log.integrate(&batch).unwrap();
            assert_eq!(first, leaves.len() as u64);
            leaves.extend(batch.iter().map(|e| leaf_hash(e)));
            publish(&mut log);
            assert_eq!(log.root(), root_of(&leaves));
            published.push((log.size(), log.root()));
        }
        let size = log.size();
        let root = log.root();
        for i in (0..size).step_by(997).chain([size - 1, 65_535, 65_536]) {
            let proof = log.inclusion_proof(i, size).unwrap();
            assert!(
                verify_inclusion(i, size, &leaf_hash(&entry(i)), &proof, &root),
                "entry {i}"
            );
            assert_eq!(log.entry(i).unwrap(), entry(i));
        }
        for (old, old_root) in published.iter().step_by(5) {
            assert_eq!(log.root_at(*old).unwrap(), *old_root);
            let proof = log.consistency_proof(*old, size).unwrap();
            assert!(
                verify_consistency(*old, size, old_root, &root, &proof),
                "from {old}"
            );
        }
        assert!(log.entry(size).is_err());
        assert!(log.inclusion_proof(0, size + 1).is_err());
        // Reopened, the log is where its checkpoint says, and goes on from there.
        drop(log);
        let mut log = Log::open(dir.path()).unwrap();
        assert_eq!((log.size(), log.root()), (size, root));
        log.integrate(&[entry(size)]).unwrap();
        leaves.push(leaf_hash(&entry(size)));
        publish(&mut log);
        assert_eq!(log.root(), root_of(&leaves));
        // Partial tiles of tiles now full were removed; what a tile server answers is intact.
        assert!(!dir.path().join("tile/0/000.p").exists());
        let tile = log.read_tile("tile/0/000").unwrap().unwrap();
        assert_eq!(tile.len(), 256 * 32);
        assert_eq!(&tile[..32], &leaves[0].0);
        let prefix = log.read_tile("tile/0/000.p/5").unwrap().unwrap();
        assert_eq!(prefix, tile[..5 * 32].to_vec());
        let bundle = log.read_tile("tile/entries/000.p/2").unwrap().unwrap();
        assert_eq!(
            crate::tiles::decode_bundle(&bundle).unwrap(),
            vec![entry(0), entry(1)]
        );
        assert_eq!(log.read_tile("tile/2/000").unwrap(), None, "not full yet");
        assert!(log.read_tile("tile/2/000.p/1").unwrap().is_some());
    }

    #[test]
    fn entries_integrated_but_not_published_are_not_there_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        let first: Vec<Vec<u8>> = (0..300).map(entry).collect();
        log.integrate(&first).unwrap();
        publish(&mut log);
        let (size, root) = (log.size(), log.root());
        // Integrated, then the process stops before publishing.
        let lost: Vec<Vec<u8>> = (0..600).map(|i| format!("lost {i}").into_bytes()).collect();
        log.integrate(&lost).unwrap();
        drop(log);
        let mut log = Log::open(dir.path()).unwrap();
        assert_eq!((log.size(), log.root()), (size, root));
        let next: Vec<Vec<u8>> = (300..900).map(entry).collect();
        log.integrate(&next).unwrap();
        publish(&mut log);
        let all: Vec<Hash> = (0..900).map(|i| leaf_hash(&entry(i))).collect();
        assert_eq!(log.root(), root_of(&all));
        assert_eq!(log.entry(512).unwrap(), entry(512));
        // A checkpoint of another tree is not published.
        let other = signer()
            .sign(
                &Checkpoint {
                    origin: "test/log".into(),
                    size: 900,
                    root: leaf_hash(b"x"),
                    extensions: vec![],
                }
                .text(),
            )
            .unwrap();
        assert!(matches!(
            log.publish(&other),
            Err(LogError::NotThisTree { .. })
        ));
        assert!(matches!(
            log.integrate(&[vec![0u8; 70_000]]),
            Err(LogError::EntryTooLarge(70_000))
        ));
    }

    fn flip(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).unwrap();
        bytes[at] ^= 1;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn a_tampered_file_is_found_before_anything_is_served_from_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = Log::open(dir.path()).unwrap();
        let entries: Vec<Vec<u8>> = (0..700).map(entry).collect();
        log.integrate(&entries).unwrap();
        publish(&mut log);
        drop(log);
        // A full tile below the edge: found when a proof needs it.
        flip(&dir.path().join("tile/0/001"), 40);
        let mut log = Log::open(dir.path()).unwrap();
        assert!(log.inclusion_proof(0, 700).is_ok());
        let err = log.inclusion_proof(300, 700).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
        // An entry changed in its bundle.
        flip(&dir.path().join("tile/entries/000"), 5);
        assert_eq!(log.entry(1).unwrap(), entry(1));
        let err = log.entry(0).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
        // The edge: found when the log opens.
        flip(&dir.path().join("tile/0/002.p/188"), 0);
        let err = Log::open(dir.path()).unwrap_err();
        assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    }

    #[test]
    fn tile_paths_name_only_tiles() {
        for bad in [
            "../checkpoint",
            "tile/0/../../checkpoint",
            "tile/0/1",
            "tile/0/0001",
            "tile/0/000.p/0",
            "tile/0/000.p/256",
            "tile/0/000.p/05",
            "tile/8/000",
            "tile/00/000",
            "tile/0/x000/001/002",
            "tile/0/001/002",
            "tile/entries/x001",
            "checkpoint",
        ] {
            assert_eq!(parse_tile_path(bad), None, "{bad}");
        }
        assert_eq!(
            parse_tile_path("tile/0/x001/x234/067"),
            Some((Some(0), 1_234_067, 256))
        );
        assert_eq!(
            parse_tile_path("tile/entries/000.p/17"),
            Some((None, 0, 17))
        );
        assert_eq!(
            parse_tile_path("tile/0/x001/000"),
            Some((Some(0), 1000, 256))
        );
    }
}
