use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A node's identity: its Ed25519 public key.
///
/// `Display` prints a short human form (the first 12 hex digits); `{:#}` prints all 64.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId(pub [u8; 32]);

/// A fabric's identity: derived from its admin public key, so an invite or certificate that
/// names a fabric also commits to the key that must have signed it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FabricId(pub [u8; 16]);

/// Why a textual id could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdParseError {
    /// Not hexadecimal, or the wrong length.
    #[error("expected {expected} hex digits, got {got:?}")]
    BadHex {
        /// Number of hex digits required.
        expected: usize,
        /// The text that was given.
        got: String,
    },
}

/// The number of hex digits in a node id's short form.
pub const SHORT_ID_LEN: usize = 12;

impl NodeId {
    /// The short human form (12 hex digits), unique enough to name a node in a fabric.
    pub fn short(&self) -> String {
        hex(&self.0[..SHORT_ID_LEN / 2])
    }

    /// The full 64-digit hex form.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// True when `prefix` (hex, any length) is a prefix of this id's full hex form.
    pub fn matches_prefix(&self, prefix: &str) -> bool {
        !prefix.is_empty() && self.to_hex().starts_with(&prefix.to_ascii_lowercase())
    }
}

impl FabricId {
    /// Derive the fabric id that belongs to an admin public key.
    pub fn from_admin_key(admin: &NodeId) -> Self {
        let digest = blake3::derive_key("weft fabric id v1", &admin.0);
        let mut id = [0u8; 16];
        id.copy_from_slice(&digest[..16]);
        FabricId(id)
    }

    /// Full hex form.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            f.write_str(&self.to_hex())
        } else {
            f.write_str(&self.short())
        }
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.short())
    }
}

impl fmt::Display for FabricId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for FabricId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FabricId({})", self.to_hex())
    }
}

impl FromStr for NodeId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<32>(s).map(NodeId)
    }
}

impl FromStr for FabricId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<16>(s).map(FabricId)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], IdParseError> {
    let bad = || IdParseError::BadHex {
        expected: N * 2,
        got: s.to_string(),
    };
    let s = s.trim();
    if s.len() != N * 2 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; N];
    for (i, pair) in s.as_bytes().chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).map_err(|_| bad())?;
        out[i] = u8::from_str_radix(text, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_id_round_trips_through_hex() {
        let id = NodeId([0xab; 32]);
        assert_eq!(id.to_hex().parse::<NodeId>(), Ok(id));
        assert_eq!(id.short(), "abababababab");
        assert!(id.matches_prefix("ABAB"));
        assert!(!id.matches_prefix(""));
        assert!("zz".parse::<NodeId>().is_err());
        assert!("é".repeat(32).parse::<NodeId>().is_err());
    }

    #[test]
    fn fabric_id_depends_on_admin_key() {
        let a = FabricId::from_admin_key(&NodeId([1; 32]));
        let b = FabricId::from_admin_key(&NodeId([2; 32]));
        assert_ne!(a, b);
        assert_eq!(a.to_hex().parse::<FabricId>(), Ok(a));
    }
}

/// A BLAKE3 hash naming content: an object's plaintext, a segment, a shard, a manifest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        ContentHash(*blake3::hash(bytes).as_bytes())
    }

    /// Full hex form.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({})", &self.to_hex()[..16])
    }
}

impl FromStr for ContentHash {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<32>(s).map(ContentHash)
    }
}
