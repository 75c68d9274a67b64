//! Merkle tree arithmetic (RFC 9162 §2.1): tree hashes, inclusion and consistency proofs and
//! their verification, and the compact range a log appends with. Pure: proofs are built from a
//! [`Subtrees`] source, which may be a slice of leaf hashes in memory or a log's tiles.

use crate::hash::{Hash, node_hash};

/// The hashes of perfect subtrees, which every proof is made of.
pub trait Subtrees {
    /// Why a hash could not be read.
    type Error;

    /// The hash of the perfect subtree of `2^level` leaves that starts at leaf
    /// `index << level`. Asked only for subtrees wholly inside the tree being proved.
    fn subtree(&mut self, level: u8, index: u64) -> Result<Hash, Self::Error>;
}

/// Leaf hashes in memory (tests, small trees).
impl Subtrees for &[Hash] {
    type Error = std::convert::Infallible;

    fn subtree(&mut self, level: u8, index: u64) -> Result<Hash, Self::Error> {
        let start = (index << level) as usize;
        Ok(root_of(&self[start..start + (1usize << level)]))
    }
}

/// The tree hash of these leaf hashes, by RFC 9162's definition (the empty tree's is
/// [`Hash::empty`]).
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => Hash::empty(),
        1 => leaves[0],
        n => {
            let k = split(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// The largest power of two below `n` (n ≥ 2): where the tree of `n` leaves splits.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The hash of leaves `[lo, hi)` where `lo` is a multiple of the smallest power of two ≥
/// `hi - lo` (every range a proof names is): the perfect subtrees that make it up, largest
/// first, folded from the right.
fn range_hash<S: Subtrees>(source: &mut S, lo: u64, hi: u64) -> Result<Hash, S::Error> {
    let mut blocks = Vec::with_capacity(64);
    let mut at = lo;
    while at < hi {
        let level = 63 - (hi - at).leading_zeros() as u8;
        blocks.push(source.subtree(level, at >> level)?);
        at += 1 << level;
    }
    let mut blocks = blocks.into_iter().rev();
    let Some(mut hash) = blocks.next() else {
        return Ok(Hash::empty());
    };
    for left in blocks {
        hash = node_hash(&left, &hash);
    }
    Ok(hash)
}

/// The hash of the tree of the first `size` leaves.
pub fn tree_hash<S: Subtrees>(source: &mut S, size: u64) -> Result<Hash, S::Error> {
    range_hash(source, 0, size)
}

/// The inclusion proof of leaf `index` in the tree of `size` leaves (`index < size`): the
/// sibling hashes from the leaf up.
pub fn inclusion_proof<S: Subtrees>(
    source: &mut S,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut path = Vec::with_capacity(64);
    // Walk down from the whole tree, remembering each sibling, then give them leaf first.
    let (mut lo, mut hi) = (0, size);
    while hi - lo > 1 {
        let k = split(hi - lo);
        if index - lo < k {
            path.push(range_hash(source, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash(source, lo, lo + k)?);
            lo += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof between the trees of `old` and `new` leaves (`0 < old ≤ new`).
pub fn consistency_proof<S: Subtrees>(
    source: &mut S,
    old: u64,
    new: u64,
) -> Result<Vec<Hash>, S::Error> {
    let mut path = Vec::with_capacity(64);
    if old == 0 || old >= new {
        return Ok(path);
    }
    // RFC 9162 SUBPROOF(m, D[lo:hi], whole), walked iteratively.
    let (mut m, mut lo, mut hi, mut whole) = (old, 0u64, new, true);
    loop {
        let n = hi - lo;
        if m == n {
            if !whole {
                path.push(range_hash(source, lo, hi)?);
            }
            break;
        }
        let k = split(n);
        if m <= k {
            path.push(range_hash(source, lo + k, hi)?);
            hi = lo + k;
        } else {
            path.push(range_hash(source, lo, lo + k)?);
            m -= k;
            lo += k;
            whole = false;
        }
    }
    path.reverse();
    Ok(path)
}

/// Whether `proof` shows the leaf with hash `leaf` at `index` in the tree of `size` leaves
/// whose hash is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(index: u64, size: u64, leaf: &Hash, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && r == *root
}

/// Whether `proof` shows the tree of `old` leaves with hash `old_root` is a prefix of the tree
/// of `new` leaves with hash `new_root` (RFC 9162 §2.1.4.2). Any tree extends the empty one;
/// a tree is consistent with itself only by an empty proof and equal hashes.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old > new {
        return false;
    }
    if old == new {
        return proof.is_empty() && old_root == new_root;
    }
    if old == 0 {
        return proof.is_empty();
    }
    if proof.is_empty() {
        return false;
    }
    let mut path = proof.iter();
    let first = if old.is_power_of_two() {
        *old_root
    } else {
        match path.next() {
            Some(h) => *h,
            None => return false,
        }
    };
    let (mut f, mut s) = (old - 1, new - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (first, first);
    for c in path {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    fr == *old_root && sr == *new_root && s == 0
}

/// The right edge of a tree: the hashes of the perfect subtrees its leaves fill, largest
/// first, one per set bit of its size. Enough to append and to compute the tree hash.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// `(level, hash)`, levels strictly decreasing.
    hashes: Vec<(u8, Hash)>,
}

impl Frontier {
    /// The frontier of the tree of `size` leaves, read from `source`.
    pub fn of<S: Subtrees>(source: &mut S, size: u64) -> Result<Frontier, S::Error> {
        let mut hashes = Vec::new();
        let mut at = 0;
        while at < size {
            let level = 63 - (size - at).leading_zeros() as u8;
            hashes.push((level, source.subtree(level, at >> level)?));
            at += 1 << level;
        }
        Ok(Frontier { size, hashes })
    }

    /// How many leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The tree hash.
    pub fn root(&self) -> Hash {
        let mut hashes = self.hashes.iter().rev();
        let Some(&(_, mut root)) = hashes.next() else {
            return Hash::empty();
        };
        for (_, left) in hashes {
            root = node_hash(left, &root);
        }
        root
    }

    /// Append a leaf; `completed` is called with `(level, index, hash)` for every perfect
    /// subtree the leaf completes, the leaf itself (level 0) first.
    pub fn push(&mut self, leaf: Hash, mut completed: impl FnMut(u8, u64, Hash)) {
        let index = self.size;
        self.size += 1;
        completed(0, index, leaf);
        let mut level = 0u8;
        let mut hash = leaf;
        while let Some(&(top, left)) = self.hashes.last() {
            if top != level {
                break;
            }
            self.hashes.pop();
            hash = node_hash(&left, &hash);
            level += 1;
            completed(level, index >> level, hash);
        }
        self.hashes.push((level, hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::leaf_hash;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(&(i as u64).to_be_bytes()))
            .collect()
    }

    #[test]
    fn roots_match_the_certificate_transparency_test_vectors() {
        let entries: [&[u8]; 8] = [
            b"",
            b"\x00",
            b"\x10",
            b"\x20\x21",
            b"\x30\x31",
            b"\x40\x41\x42\x43",
            b"\x50\x51\x52\x53\x54\x55\x56\x57",
            b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
        ];
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let hashes: Vec<Hash> = entries.iter().map(|e| leaf_hash(e)).collect();
        for (n, want) in roots.iter().enumerate() {
            assert_eq!(root_of(&hashes[..n + 1]).to_hex(), *want, "size {}", n + 1);
        }
    }

    proptest! {
        #[test]
        fn every_inclusion_proof_verifies_and_no_altered_one_does(
            size in 1u64..600, pick in any::<u64>(), flip in any::<(usize, u8)>()
        ) {
            let all = leaves(size as usize);
            let mut source = all.as_slice();
            let root = root_of(&all);
            prop_assert_eq!(tree_hash(&mut source, size).unwrap(), root);
            let index = pick % size;
            let proof = inclusion_proof(&mut source, index, size).unwrap();
            prop_assert!(verify_inclusion(index, size, &all[index as usize], &proof, &root));
            // Another leaf, index or size does not verify.
            let other = leaf_hash(b"other");
            prop_assert!(!verify_inclusion(index, size, &other, &proof, &root));
            if size > 1 {
                prop_assert!(!verify_inclusion((index + 1) % size, size, &all[index as usize], &proof, &root));
            }
            // (The size is bound by the signed checkpoint, not the proof: the trees of 17 and
            // 18 leaves give leaf 0 the same path, so the proof alone cannot tell them apart.)
            if !proof.is_empty() {
                let mut bad = proof.clone();
                let at = flip.0 % bad.len();
                bad[at].0[(flip.1 % 32) as usize] ^= 1;
                prop_assert!(!verify_inclusion(index, size, &all[index as usize], &bad, &root));
                prop_assert!(!verify_inclusion(index, size, &all[index as usize], &proof[1..], &root));
            }
        }

        #[test]
        fn every_consistency_proof_verifies_and_no_rewritten_history_does(
            new in 1u64..600, pick in any::<u64>(), changed in any::<u64>()
        ) {
            let all = leaves(new as usize);
            let mut source = all.as_slice();
            let old = 1 + pick % new;
            let (old_root, new_root) = (root_of(&all[..old as usize]), root_of(&all));
            let proof = consistency_proof(&mut source, old, new).unwrap();
            prop_assert!(verify_consistency(old, new, &old_root, &new_root, &proof));
            // A log that changed any earlier leaf cannot prove itself consistent.
            let mut rewritten = all.clone();
            let at = (changed % old) as usize;
            rewritten[at] = leaf_hash(b"rewritten");
            let mut source = rewritten.as_slice();
            let forged = consistency_proof(&mut source, old, new).unwrap();
            prop_assert!(!verify_consistency(old, new, &old_root, &root_of(&rewritten), &forged));
            if old < new {
                prop_assert!(!verify_consistency(old, new, &old_root, &root_of(&rewritten), &proof));
            }
        }

        #[test]
        fn the_frontier_follows_the_tree(size in 0u64..700) {
            let all = leaves(size as usize);
            let mut frontier = Frontier::default();
            let mut completed = Vec::new();
            for leaf in &all {
                frontier.push(*leaf, |level, index, hash| completed.push((level, index, hash)));
            }
            prop_assert_eq!(frontier.root(), root_of(&all));
            let mut source = all.as_slice();
            prop_assert_eq!(&Frontier::of(&mut source, size).unwrap(), &frontier);
            for (level, index, hash) in completed {
                prop_assert_eq!(hash, source.subtree(level, index).unwrap());
            }
        }
    }
}
