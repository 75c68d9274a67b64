//! The object codec, one segment at a time: BLAKE3 of the plaintext, AES-256-GCM with the
//! object's key, Reed–Solomon k+m erasure coding in stripes, and BLAKE3 names for the shards.
//!
//! Pure: no IO, no randomness (the caller supplies the object key). Encoding works in stripes of
//! [`STRIPE`] bytes per shard, because the erasure coder is several times faster on shards of
//! that size than on whole multi-MiB shards; a shard is the concatenation of its stripes.

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use serde::{Deserialize, Serialize};
use weft_core::ContentHash;

/// Bytes per shard per erasure-coding stripe.
pub const STRIPE: usize = 256 << 10;
/// The AEAD tag appended to each encrypted segment.
pub const TAG_LEN: usize = 16;
/// Largest number of data or parity shards per segment.
pub const MAX_SHARDS: usize = 64;

/// A per-object encryption key.
#[derive(Clone)]
pub struct ObjectKey(pub [u8; 32]);

impl std::fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ObjectKey(..)")
    }
}

/// Erasure-coding parameters: `data` shards suffice to rebuild, `parity` may be lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Erasure {
    /// k: data shards.
    pub data: usize,
    /// m: parity shards.
    pub parity: usize,
}

impl Erasure {
    /// Total shards per segment.
    pub fn total(&self) -> usize {
        self.data + self.parity
    }

    /// Check the parameters are usable.
    pub fn validate(&self) -> Result<(), CodecError> {
        if self.data == 0 || self.data > MAX_SHARDS || self.parity > MAX_SHARDS {
            return Err(CodecError::BadErasure(*self));
        }
        Ok(())
    }
}

impl std::fmt::Display for Erasure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}+{}", self.data, self.parity)
    }
}

impl std::str::FromStr for Erasure {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (k, m) = s
            .split_once('+')
            .ok_or_else(|| format!("{s:?}: expected DATA+PARITY, e.g. 4+2"))?;
        let e = Erasure {
            data: k
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: {k:?} is not a number"))?,
            parity: m
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: {m:?} is not a number"))?,
        };
        e.validate().map_err(|err| err.to_string())?;
        Ok(e)
    }
}

/// What a manifest records about one segment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Position in the object.
    pub index: u32,
    /// Plaintext length.
    pub plain_len: u64,
    /// BLAKE3 of the plaintext, keyed with a key derived from the object key (plain BLAKE3 in
    /// manifests of format 1).
    pub plain_hash: ContentHash,
    /// Ciphertext length (plaintext + tag).
    pub cipher_len: u64,
    /// Bytes per shard.
    pub shard_len: u64,
    /// BLAKE3 of each shard, data shards first.
    pub shards: Vec<ContentHash>,
}

/// A segment ready to be placed.
#[derive(Debug)]
pub struct EncodedSegment {
    /// Its description.
    pub info: SegmentInfo,
    /// The k+m shards, in order.
    pub shards: Vec<Vec<u8>>,
}

/// The result of decoding.
#[derive(Debug)]
pub struct DecodedSegment {
    /// The verified plaintext.
    pub plain: Vec<u8>,
    /// Indices of supplied shards that did not match their hash (their holders should be told).
    pub bad_shards: Vec<usize>,
}

/// Codec failures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Unusable k+m.
    #[error("erasure coding {0} is not supported (1 to 64 data shards, 0 to 64 parity)")]
    BadErasure(Erasure),
    /// Fewer than k shards matched their hashes.
    #[error("segment {index}: only {good} good shards of the {needed} needed (bad: {bad:?})")]
    NotEnoughShards {
        /// Segment index.
        index: u32,
        /// Good shards supplied.
        good: usize,
        /// k.
        needed: usize,
        /// Shards that failed verification.
        bad: Vec<usize>,
    },
    /// Decryption failed (wrong key or corrupted ciphertext that matched its hashes).
    #[error("segment {0}: decryption failed (wrong key?)")]
    Decrypt(u32),
    /// The plaintext does not match its hash.
    #[error("segment {0}: plaintext does not match its hash")]
    PlainMismatch(u32),
    /// The erasure coder refused (a bug or inconsistent manifest).
    #[error("erasure coding failed: {0}")]
    Erasure(String),
}

fn nonce(index: u32) -> Nonce {
    let mut n = [0u8; 12];
    n[8..].copy_from_slice(&index.to_be_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aead(key: &ObjectKey) -> LessSafeKey {
    // 32 bytes is always a valid AES-256 key.
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key.0).unwrap_or_else(|_| unreachable!()))
}

const AAD: &[u8] = b"weft segment v1";

/// The key plaintext hashes are made with: derived from the object key, so a manifest — which
/// every holder stores and anyone in the fabric may fetch — says nothing about the plaintext
/// to whoever cannot read the object (no "is this that file?" test by hash).
fn hash_key(key: &ObjectKey) -> [u8; 32] {
    blake3::derive_key("weft plaintext hash v2", &key.0)
}

/// The hasher of an object's content id: keyed with the object key, or (manifests from before
/// keyed hashes, `keyed == false`) plain BLAKE3.
pub fn content_hasher(key: &ObjectKey, keyed: bool) -> blake3::Hasher {
    if keyed {
        blake3::Hasher::new_keyed(&hash_key(key))
    } else {
        blake3::Hasher::new()
    }
}

/// Encode one segment of plaintext.
pub fn encode_segment(
    key: &ObjectKey,
    index: u32,
    plain: &[u8],
    ec: Erasure,
) -> Result<EncodedSegment, CodecError> {
    ec.validate()?;
    let plain_hash = ContentHash(*blake3::keyed_hash(&hash_key(key), plain).as_bytes());
    let mut cipher = Vec::with_capacity(plain.len() + TAG_LEN);
    cipher.extend_from_slice(plain);
    aead(key)
        .seal_in_place_append_tag(nonce(index), Aad::from(AAD), &mut cipher)
        .map_err(|_| CodecError::Erasure("encryption failed".into()))?;
    let cipher_len = cipher.len();
    let shard_len = cipher_len.div_ceil(ec.data).next_multiple_of(2).max(2);
    cipher.resize(shard_len * ec.data, 0);
    let mut shards: Vec<Vec<u8>> = cipher.chunks(shard_len).map(<[u8]>::to_vec).collect();
    shards.extend((0..ec.parity).map(|_| Vec::with_capacity(shard_len)));
    if ec.parity > 0 {
        let mut offset = 0;
        let mut encoder: Option<reed_solomon_simd::ReedSolomonEncoder> = None;
        while offset < shard_len {
            let len = STRIPE.min(shard_len - offset);
            let enc = match encoder.as_mut() {
                Some(e) => {
                    e.reset(ec.data, ec.parity, len).map_err(erasure_err)?;
                    e
                }
                None => encoder.insert(
                    reed_solomon_simd::ReedSolomonEncoder::new(ec.data, ec.parity, len)
                        .map_err(erasure_err)?,
                ),
            };
            for shard in &shards[..ec.data] {
                enc.add_original_shard(&shard[offset..offset + len])
                    .map_err(erasure_err)?;
            }
            let result = enc.encode().map_err(erasure_err)?;
            for (j, piece) in result.recovery_iter().enumerate() {
                shards[ec.data + j].extend_from_slice(piece);
            }
            offset += len;
        }
    }
    let hashes = shards.iter().map(|s| ContentHash::of(s)).collect();
    Ok(EncodedSegment {
        info: SegmentInfo {
            index,
            plain_len: plain.len() as u64,
            plain_hash,
            cipher_len: cipher_len as u64,
            shard_len: shard_len as u64,
            shards: hashes,
        },
        shards,
    })
}

fn erasure_err(e: reed_solomon_simd::Error) -> CodecError {
    CodecError::Erasure(e.to_string())
}

/// Rebuild every shard of a segment from any k of them, without the object key (repair runs on
/// ciphertext). Each supplied shard is verified first, and each rebuilt one is checked against
/// its hash in the manifest, so a rebuilt shard is always the one that was lost.
pub fn rebuild_shards(
    info: &SegmentInfo,
    ec: Erasure,
    supplied: &[(usize, &[u8])],
) -> Result<Vec<Vec<u8>>, CodecError> {
    ec.validate()?;
    let shard_len = info.shard_len as usize;
    let mut bad = Vec::new();
    let mut good: Vec<(usize, &[u8])> = Vec::new();
    for &(i, bytes) in supplied {
        if info
            .shards
            .get(i)
            .is_some_and(|h| *h == ContentHash::of(bytes))
            && bytes.len() == shard_len
            && !good.iter().any(|(j, _)| *j == i)
        {
            good.push((i, bytes));
        } else {
            bad.push(i);
        }
    }
    if good.len() < ec.data || info.shards.len() != ec.total() {
        return Err(CodecError::NotEnoughShards {
            index: info.index,
            good: good.len(),
            needed: ec.data,
            bad,
        });
    }
    let mut data: Vec<Vec<u8>> = vec![Vec::new(); ec.data];
    for &(i, bytes) in &good {
        if i < ec.data {
            data[i] = bytes.to_vec();
        }
    }
    if data.iter().any(Vec::is_empty) {
        for d in data.iter_mut().filter(|d| d.is_empty()) {
            d.resize(shard_len, 0);
        }
        let missing: Vec<bool> = (0..ec.data)
            .map(|i| !good.iter().any(|(j, _)| *j == i))
            .collect();
        let mut offset = 0;
        while offset < shard_len {
            let len = STRIPE.min(shard_len - offset);
            let mut dec = reed_solomon_simd::ReedSolomonDecoder::new(ec.data, ec.parity, len)
                .map_err(erasure_err)?;
            for &(i, bytes) in &good {
                let piece = &bytes[offset..offset + len];
                if i < ec.data {
                    dec.add_original_shard(i, piece).map_err(erasure_err)?;
                } else {
                    dec.add_recovery_shard(i - ec.data, piece)
                        .map_err(erasure_err)?;
                }
            }
            let result = dec.decode().map_err(erasure_err)?;
            for (i, piece) in result.restored_original_iter() {
                if missing[i] {
                    data[i][offset..offset + len].copy_from_slice(piece);
                }
            }
            offset += len;
        }
    }
    let mut shards = data;
    shards.extend((0..ec.parity).map(|_| Vec::with_capacity(shard_len)));
    if ec.parity > 0 {
        let mut offset = 0;
        while offset < shard_len {
            let len = STRIPE.min(shard_len - offset);
            let mut enc = reed_solomon_simd::ReedSolomonEncoder::new(ec.data, ec.parity, len)
                .map_err(erasure_err)?;
            for shard in &shards[..ec.data] {
                enc.add_original_shard(&shard[offset..offset + len])
                    .map_err(erasure_err)?;
            }
            let result = enc.encode().map_err(erasure_err)?;
            for (j, piece) in result.recovery_iter().enumerate() {
                shards[ec.data + j].extend_from_slice(piece);
            }
            offset += len;
        }
    }
    for (i, shard) in shards.iter().enumerate() {
        if ContentHash::of(shard) != info.shards[i] {
            return Err(CodecError::Erasure(format!(
                "segment {}: rebuilt shard {i} does not match its hash",
                info.index
            )));
        }
    }
    Ok(shards)
}

/// Decode a segment from any shards `(index, bytes)`; each is verified against its hash first.
pub fn decode_segment(
    key: &ObjectKey,
    info: &SegmentInfo,
    ec: Erasure,
    supplied: &[(usize, &[u8])],
) -> Result<DecodedSegment, CodecError> {
    ec.validate()?;
    let shard_len = info.shard_len as usize;
    let mut bad = Vec::new();
    let mut good: Vec<(usize, &[u8])> = Vec::new();
    for &(i, bytes) in supplied {
        let expected = info.shards.get(i);
        if expected.is_some_and(|h| *h == ContentHash::of(bytes))
            && bytes.len() == shard_len
            && !good.iter().any(|(j, _)| *j == i)
        {
            good.push((i, bytes));
        } else {
            bad.push(i);
        }
    }
    if good.len() < ec.data || info.shards.len() != ec.total() {
        return Err(CodecError::NotEnoughShards {
            index: info.index,
            good: good.len(),
            needed: ec.data,
            bad,
        });
    }
    let mut cipher = vec![0u8; shard_len * ec.data];
    let mut have = vec![false; ec.data];
    for &(i, bytes) in &good {
        if i < ec.data {
            cipher[i * shard_len..(i + 1) * shard_len].copy_from_slice(bytes);
            have[i] = true;
        }
    }
    if have.iter().any(|h| !h) {
        let mut offset = 0;
        while offset < shard_len {
            let len = STRIPE.min(shard_len - offset);
            let mut dec = reed_solomon_simd::ReedSolomonDecoder::new(ec.data, ec.parity, len)
                .map_err(erasure_err)?;
            for &(i, bytes) in &good {
                let piece = &bytes[offset..offset + len];
                if i < ec.data {
                    dec.add_original_shard(i, piece).map_err(erasure_err)?;
                } else {
                    dec.add_recovery_shard(i - ec.data, piece)
                        .map_err(erasure_err)?;
                }
            }
            let result = dec.decode().map_err(erasure_err)?;
            for (i, piece) in result.restored_original_iter() {
                cipher[i * shard_len + offset..i * shard_len + offset + len].copy_from_slice(piece);
            }
            offset += len;
        }
    }
    cipher.truncate(info.cipher_len as usize);
    let plain_len = aead(key)
        .open_in_place(nonce(info.index), Aad::from(AAD), &mut cipher)
        .map_err(|_| CodecError::Decrypt(info.index))?
        .len();
    cipher.truncate(plain_len);
    // Keyed since manifest format 2; a plain hash in segments of older manifests.
    let keyed = ContentHash(*blake3::keyed_hash(&hash_key(key), &cipher).as_bytes());
    if keyed != info.plain_hash && ContentHash::of(&cipher) != info.plain_hash {
        return Err(CodecError::PlainMismatch(info.index));
    }
    Ok(DecodedSegment {
        plain: cipher,
        bad_shards: bad,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const KEY: ObjectKey = ObjectKey([7; 32]);

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn any_k_shards_rebuild_the_segment() {
        let ec = Erasure { data: 4, parity: 2 };
        let plain = data(STRIPE * 5 + 12345);
        let seg = encode_segment(&KEY, 3, &plain, ec).unwrap();
        assert_eq!(seg.shards.len(), 6);
        for a in 0..6 {
            for b in a + 1..6 {
                let supplied: Vec<(usize, &[u8])> = (0..6)
                    .filter(|i| *i != a && *i != b)
                    .map(|i| (i, seg.shards[i].as_slice()))
                    .collect();
                let out = decode_segment(&KEY, &seg.info, ec, &supplied).unwrap();
                assert_eq!(out.plain, plain, "lost {a} and {b}");
            }
        }
    }

    #[test]
    fn plaintext_hashes_are_keyed_and_old_plain_ones_still_verify() {
        let ec = Erasure { data: 2, parity: 1 };
        let plain = data(10_000);
        let seg = encode_segment(&KEY, 0, &plain, ec).unwrap();
        // The manifest's hash says nothing to whoever lacks the object key.
        assert_ne!(seg.info.plain_hash, ContentHash::of(&plain));
        let other = encode_segment(&ObjectKey([8; 32]), 0, &plain, ec).unwrap();
        assert_ne!(seg.info.plain_hash, other.info.plain_hash);
        let all: Vec<(usize, &[u8])> = (0..3).map(|i| (i, seg.shards[i].as_slice())).collect();
        assert_eq!(
            decode_segment(&KEY, &seg.info, ec, &all).unwrap().plain,
            plain
        );
        // A segment described the old way (plain BLAKE3) still reads.
        let mut old = seg.info.clone();
        old.plain_hash = ContentHash::of(&plain);
        assert_eq!(decode_segment(&KEY, &old, ec, &all).unwrap().plain, plain);
        let mut wrong = seg.info.clone();
        wrong.plain_hash = ContentHash::of(b"something else");
        assert!(matches!(
            decode_segment(&KEY, &wrong, ec, &all),
            Err(CodecError::PlainMismatch(0))
        ));
        let mut h = content_hasher(&KEY, true);
        h.update(&plain);
        assert_eq!(ContentHash(*h.finalize().as_bytes()), seg.info.plain_hash);
    }

    #[test]
    fn corruption_is_detected_and_routed_around() {
        let ec = Erasure { data: 2, parity: 2 };
        let plain = data(10_000);
        let seg = encode_segment(&KEY, 0, &plain, ec).unwrap();
        let mut broken = seg.shards[0].clone();
        broken[17] ^= 1;
        let supplied: Vec<(usize, &[u8])> =
            vec![(0, &broken), (1, &seg.shards[1]), (3, &seg.shards[3])];
        let out = decode_segment(&KEY, &seg.info, ec, &supplied).unwrap();
        assert_eq!(out.plain, plain);
        assert_eq!(out.bad_shards, vec![0]);
        let too_few: Vec<(usize, &[u8])> = vec![(0, &broken), (1, &seg.shards[1])];
        assert!(matches!(
            decode_segment(&KEY, &seg.info, ec, &too_few),
            Err(CodecError::NotEnoughShards { good: 1, .. })
        ));
        let all: Vec<(usize, &[u8])> = seg
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.as_slice()))
            .collect();
        assert_eq!(
            decode_segment(&ObjectKey([8; 32]), &seg.info, ec, &all).unwrap_err(),
            CodecError::Decrypt(0)
        );
    }

    #[test]
    fn any_k_shards_rebuild_all_shards_without_the_key() {
        let ec = Erasure { data: 4, parity: 2 };
        let enc = encode_segment(&KEY, 3, &data(700_001), ec).unwrap();
        for lost in [[0usize, 1], [4, 5], [1, 5], [2, 3]] {
            let supplied: Vec<(usize, &[u8])> = enc
                .shards
                .iter()
                .enumerate()
                .filter(|(i, _)| !lost.contains(i))
                .map(|(i, s)| (i, s.as_slice()))
                .collect();
            let rebuilt = rebuild_shards(&enc.info, ec, &supplied).unwrap();
            assert_eq!(rebuilt, enc.shards, "lost {lost:?}");
        }
        let three: Vec<(usize, &[u8])> = enc.shards[..3]
            .iter()
            .enumerate()
            .map(|(i, s)| (i, s.as_slice()))
            .collect();
        assert!(rebuild_shards(&enc.info, ec, &three).is_err());
    }

    #[test]
    fn shards_hold_no_plaintext() {
        let marker = b"WEFT-PLAINTEXT-MARKER-0123456789";
        let plain: Vec<u8> = marker.iter().copied().cycle().take(100_000).collect();
        let seg = encode_segment(&KEY, 0, &plain, Erasure { data: 4, parity: 2 }).unwrap();
        for shard in &seg.shards {
            assert!(!shard.windows(marker.len()).any(|w| w == marker));
        }
    }

    #[test]
    fn erasure_text_parses() {
        assert_eq!("4+2".parse::<Erasure>(), Ok(Erasure { data: 4, parity: 2 }));
        assert!("0+2".parse::<Erasure>().is_err());
        assert!("4-2".parse::<Erasure>().is_err());
        assert!("4+x".parse::<Erasure>().is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn round_trips_with_random_losses(
            len in 0usize..200_000,
            k in 1usize..6,
            m in 0usize..4,
            lost in proptest::collection::vec(any::<proptest::sample::Index>(), 0..4),
        ) {
            let ec = Erasure { data: k, parity: m };
            let plain = data(len);
            let seg = encode_segment(&KEY, 1, &plain, ec).unwrap();
            let mut drop: Vec<usize> = lost.iter().map(|i| i.index(k + m)).collect();
            drop.sort();
            drop.dedup();
            drop.truncate(m);
            let supplied: Vec<(usize, &[u8])> = (0..k + m)
                .filter(|i| !drop.contains(i))
                .map(|i| (i, seg.shards[i].as_slice()))
                .collect();
            let out = decode_segment(&KEY, &seg.info, ec, &supplied).unwrap();
            prop_assert_eq!(out.plain, plain);
        }
    }
}

/// Encrypt an object key under a key-encryption key (AES-256-GCM, random nonce first).
pub fn wrap_key(kek: &[u8; 32], key: &[u8; 32], context: &[u8]) -> Result<Vec<u8>, CodecError> {
    seal(kek, key, context)
}

/// Decrypt a wrapped object key; `None` if the key-encryption key or context is wrong.
pub fn unwrap_key(kek: &[u8; 32], wrapped: &[u8], context: &[u8]) -> Option<[u8; 32]> {
    open(kek, wrapped, context)?.try_into().ok()
}

/// Encrypt and authenticate `plain` under `key`, bound to `context` (AES-256-GCM, random
/// nonce first).
pub fn seal(key: &[u8; 32], plain: &[u8], context: &[u8]) -> Result<Vec<u8>, CodecError> {
    let mut nonce = [0u8; 12];
    getrandom::fill(&mut nonce).map_err(|e| CodecError::Erasure(format!("no randomness: {e}")))?;
    let mut sealed = plain.to_vec();
    aead(&ObjectKey(*key))
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut sealed,
        )
        .map_err(|_| CodecError::Erasure("sealing failed".into()))?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&sealed);
    Ok(out)
}

/// Open what [`seal`] made; `None` if the key or context is wrong or the bytes were altered.
pub fn open(key: &[u8; 32], sealed: &[u8], context: &[u8]) -> Option<Vec<u8>> {
    let nonce: [u8; 12] = sealed.get(..12)?.try_into().ok()?;
    let mut body = sealed.get(12..)?.to_vec();
    let plain = aead(&ObjectKey(*key))
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context),
            &mut body,
        )
        .ok()?;
    Some(plain.to_vec())
}

#[cfg(test)]
mod wrap_tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_with_the_right_key_and_context() {
        let w = wrap_key(&[1; 32], &[9; 32], b"bucket/key").unwrap();
        assert_eq!(unwrap_key(&[1; 32], &w, b"bucket/key"), Some([9; 32]));
        assert_eq!(unwrap_key(&[2; 32], &w, b"bucket/key"), None);
        assert_eq!(unwrap_key(&[1; 32], &w, b"bucket/other"), None);
        assert_eq!(unwrap_key(&[1; 32], &w[..10], b"bucket/key"), None);
    }
}
