//! What keeps a bucket's metadata from the nodes that store it: object names encrypted segment
//! by segment, and row values sealed, under keys derived from the bucket's key.
//!
//! **Names.** An object key is split at `/`; each segment is encrypted deterministically
//! (SIV-style: the nonce is a keyed BLAKE3 of the segment, the keystream BLAKE3's output in
//! keyed XOF mode, so the same name always has the same stored form and a lookup by name is one
//! row read), under a key of its own directory, derived from the directory's parent key and
//! plaintext name (as Storj does). The stored form keeps the `/`s, so every key under a
//! directory shares the stored form of that directory as a prefix: a listing by prefix reads
//! the rows under the prefix's last whole directory, then opens, filters and sorts them. The
//! same segment under two directories has unrelated stored forms. What shows: each name's
//! segment count and lengths, the directory tree (names under one directory share its stored
//! prefix), and which names are equal (within one directory).
//!
//! **Values.** Row values are sealed with AES-256-GCM (random nonce) bound to the row's
//! partition and sort key, so a stored value cannot be replayed under another name.
//!
//! Pure functions of their inputs; no IO.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;
use weft_core::wire;

/// Bytes of a segment's synthetic nonce (also its tag).
const TAG: usize = 16;

/// The keys of one bucket's sealed rows.
#[derive(Clone)]
pub struct BucketSeal {
    /// The root directory's key.
    names: [u8; 32],
    /// What row values are sealed under.
    rows: [u8; 32],
}

impl BucketSeal {
    /// The seal of the bucket whose key is `bucket_key`.
    pub fn new(bucket_key: &[u8; 32]) -> BucketSeal {
        BucketSeal {
            names: blake3::derive_key("weft object names v1", bucket_key),
            rows: blake3::derive_key("weft object rows v1", bucket_key),
        }
    }

    /// The stored form of object key `key`.
    pub fn name(&self, key: &str) -> String {
        let mut dir = self.names;
        let mut out = String::with_capacity(key.len() * 2 + 24);
        for (i, seg) in key.split('/').enumerate() {
            if i > 0 {
                out.push('/');
            }
            URL_SAFE_NO_PAD.encode_string(seal_segment(&dir, seg.as_bytes()), &mut out);
            dir = child(&dir, seg.as_bytes());
        }
        out
    }

    /// The stored prefix of every key that starts with `prefix`: the stored form of its whole
    /// segments, up to and including its last `/` ("" if it has none).
    pub fn dir_prefix(&self, prefix: &str) -> String {
        match prefix.rfind('/') {
            Some(i) => {
                let mut out = self.name(&prefix[..i]);
                out.push('/');
                out
            }
            None => String::new(),
        }
    }

    /// The object key whose stored form is `stored`; `None` if it is not one this seal made.
    pub fn open_name(&self, stored: &str) -> Option<String> {
        let mut dir = self.names;
        let mut out = Vec::with_capacity(stored.len());
        for (i, seg) in stored.split('/').enumerate() {
            if i > 0 {
                out.push(b'/');
            }
            let sealed = URL_SAFE_NO_PAD.decode(seg).ok()?;
            let plain = open_segment(&dir, &sealed)?;
            dir = child(&dir, &plain);
            out.extend_from_slice(&plain);
        }
        String::from_utf8(out).ok()
    }

    /// `value`, sealed for the row at `pk`/`sk`.
    pub fn seal<T: Serialize>(&self, pk: &str, sk: &str, value: &T) -> Vec<u8> {
        weft_store::seal(&self.rows, &wire::encode(value), &row_context(pk, sk))
            .expect("AES-GCM sealing of an in-memory buffer only fails without randomness")
    }

    /// What [`BucketSeal::seal`] sealed for the row at `pk`/`sk`; `None` if the bytes were not
    /// sealed by this seal for that row, or were altered.
    pub fn open<T: DeserializeOwned>(&self, pk: &str, sk: &str, sealed: &[u8]) -> Option<T> {
        wire::decode(&self.open_bytes(pk, sk, sealed)?).ok()
    }

    /// The encoded value [`BucketSeal::seal`] sealed for the row at `pk`/`sk` (see
    /// [`BucketSeal::open`]), for a caller that decodes it itself.
    pub fn open_bytes(&self, pk: &str, sk: &str, sealed: &[u8]) -> Option<Vec<u8>> {
        weft_store::open(&self.rows, sealed, &row_context(pk, sk))
    }
}

fn row_context(pk: &str, sk: &str) -> Vec<u8> {
    let mut c = Vec::with_capacity(pk.len() + sk.len() + 1);
    c.extend_from_slice(pk.as_bytes());
    c.push(0);
    c.extend_from_slice(sk.as_bytes());
    c
}

/// A keyed BLAKE3 of `domain` then `data`: the three uses of a directory key are kept apart by
/// their first byte.
fn keyed(dir: &[u8; 32], domain: u8, data: &[u8]) -> blake3::Hasher {
    let mut h = blake3::Hasher::new_keyed(dir);
    h.update(&[domain]);
    h.update(data);
    h
}

/// The key of directory `seg` under the directory whose key is `dir`.
fn child(dir: &[u8; 32], seg: &[u8]) -> [u8; 32] {
    *keyed(dir, 2, seg).finalize().as_bytes()
}

fn xor_keystream(dir: &[u8; 32], tag: &[u8], data: &mut [u8]) {
    let mut stream = keyed(dir, 1, tag).finalize_xof();
    let mut pad = [0u8; 64];
    for chunk in data.chunks_mut(64) {
        stream.fill(&mut pad[..chunk.len()]);
        for (b, p) in chunk.iter_mut().zip(pad.iter()) {
            *b ^= p;
        }
    }
}

fn seal_segment(dir: &[u8; 32], seg: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(TAG + seg.len());
    out.extend_from_slice(&keyed(dir, 0, seg).finalize().as_bytes()[..TAG]);
    out.extend_from_slice(seg);
    let (tag, body) = out.split_at_mut(TAG);
    xor_keystream(dir, tag, body);
    out
}

fn open_segment(dir: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < TAG {
        return None;
    }
    let (tag, body) = sealed.split_at(TAG);
    let mut plain = body.to_vec();
    xor_keystream(dir, tag, &mut plain);
    let expected = keyed(dir, 0, &plain).finalize();
    // Not secret-dependent timing: the tag is public (it is in the stored name).
    (expected.as_bytes()[..TAG] == *tag).then_some(plain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn seal() -> BucketSeal {
        BucketSeal::new(&[7; 32])
    }

    #[test]
    fn names_are_deterministic_and_open_back() {
        let s = seal();
        for key in [
            "a",
            "photos/2024/cat.jpg",
            "dir/",
            "/lead",
            "a//b",
            "ü/ñ",
            "",
        ] {
            let stored = s.name(key);
            assert_eq!(stored, s.name(key), "{key:?}");
            assert_eq!(s.open_name(&stored).as_deref(), Some(key), "{key:?}");
            assert_eq!(stored.matches('/').count(), key.matches('/').count());
            if !key.is_empty() {
                assert!(!stored.contains(key.trim_matches('/')), "{stored}");
            }
        }
    }

    #[test]
    fn a_segment_is_stored_differently_under_each_directory_and_bucket() {
        let s = seal();
        let a = s.name("x/2024");
        let b = s.name("y/2024");
        assert_ne!(a.split('/').nth(1), b.split('/').nth(1));
        assert_ne!(s.name("2024"), BucketSeal::new(&[8; 32]).name("2024"));
        assert_eq!(BucketSeal::new(&[8; 32]).open_name(&s.name("2024")), None);
    }

    #[test]
    fn altered_names_do_not_open() {
        let s = seal();
        let stored = s.name("photos/cat.jpg");
        let mut bytes = stored.clone().into_bytes();
        let last = bytes.len() - 1;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(s.open_name(std::str::from_utf8(&bytes).unwrap()), None);
        assert_eq!(s.open_name("not base64!"), None);
        assert_eq!(s.open_name("AAAA"), None);
    }

    #[test]
    fn values_open_only_for_their_own_row() {
        let s = seal();
        let v = s.seal("so/x/b", "name", &("text/plain".to_string(), 42u64));
        assert_eq!(
            s.open::<(String, u64)>("so/x/b", "name", &v),
            Some(("text/plain".into(), 42))
        );
        assert_eq!(s.open::<(String, u64)>("so/x/b", "other", &v), None);
        assert_eq!(s.open::<(String, u64)>("so/x/c", "name", &v), None);
        assert_eq!(
            BucketSeal::new(&[8; 32]).open::<(String, u64)>("so/x/b", "name", &v),
            None
        );
    }

    proptest! {
        /// Listing by prefix reads the rows under `dir_prefix(prefix)`: every key that starts
        /// with the prefix is stored under it.
        #[test]
        fn every_key_with_a_prefix_is_stored_under_its_directory_prefix(
            key in "[a-c/]{0,12}",
            cut in 0usize..13,
        ) {
            let s = seal();
            let prefix = &key[..cut.min(key.len())];
            prop_assert!(s.name(&key).starts_with(&s.dir_prefix(prefix)));
            prop_assert_eq!(s.open_name(&s.name(&key)), Some(key.clone()));
        }
    }
}
