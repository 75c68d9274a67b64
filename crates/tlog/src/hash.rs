//! RFC 6962 hashing: SHA-256 with a leaf prefix `0x00` and an interior prefix `0x01`, so no
//! leaf can be passed off as an interior node (RFC 9162 §2.1.1).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A SHA-256 hash of a leaf, an interior node or a tree.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    /// The root of the empty tree: SHA-256 of nothing.
    pub fn empty() -> Hash {
        sha256(&[])
    }

    /// Standard base64, as checkpoints write it.
    pub fn to_base64(&self) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(self.0)
    }

    /// Parse [`Hash::to_base64`]'s form.
    pub fn from_base64(text: &str) -> Option<Hash> {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .ok()?;
        Some(Hash(bytes.try_into().ok()?))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({}…)", &self.to_hex()[..12])
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

fn sha256(bytes: &[u8]) -> Hash {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    Hash(out)
}

/// SHA-256 of `bytes` (used for key ids, which the note formats define this way).
pub(crate) fn plain_sha256(bytes: &[u8]) -> [u8; 32] {
    sha256(bytes).0
}

/// The hash of a leaf holding `entry`: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&[0]);
    ctx.update(entry);
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    Hash(out)
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    sha256(&buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_rfc_6962_test_vectors() {
        // The empty tree and the one-leaf tree of the empty entry, from the certificate
        // transparency test vectors (RFC 6962's reference implementation).
        assert_eq!(
            Hash::empty().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            leaf_hash(b"").to_hex(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
        let h = Hash::from_base64(&leaf_hash(b"x").to_base64()).unwrap();
        assert_eq!(h, leaf_hash(b"x"));
        assert_eq!(Hash::from_base64("AAAA"), None);
    }
}
