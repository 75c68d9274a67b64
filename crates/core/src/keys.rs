use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use crate::NodeId;

/// An Ed25519 signing key (a node key or a fabric admin key).
///
/// `Debug` never prints the secret.
#[derive(Clone)]
pub struct SecretKey(ed25519_dalek::SigningKey);

/// A detached Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature(#[serde(with = "sig_bytes")] pub [u8; 64]);

/// A signature did not verify.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignatureError {
    /// The public key bytes are not a valid Ed25519 point.
    #[error("malformed public key")]
    BadKey,
    /// The signature does not match the message and key.
    #[error("signature does not verify")]
    Mismatch,
}

impl SecretKey {
    /// A key from a 32-byte seed. Callers supply the randomness (this crate does no IO).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        SecretKey(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// The 32-byte seed, for storing the key.
    pub fn seed(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// The matching public key, as a node id.
    pub fn public(&self) -> NodeId {
        NodeId(self.0.verifying_key().to_bytes())
    }

    /// Sign `message` in the given domain.
    pub fn sign(&self, domain: &str, message: &[u8]) -> Signature {
        Signature(self.0.sign(&domain_message(domain, message)).to_bytes())
    }

    /// Sign `text` itself, with no domain, as the C2SP signed-note formats require (a
    /// transparency log's checkpoints and their cosignatures, which other tools verify). A
    /// text holding a NUL byte is refused (`None`): every other signature of weft's is over
    /// `domain, NUL, message` with a domain free of NUL, so no signed text can ever be read as
    /// one of them, nor one of them as a signed text.
    pub fn sign_text(&self, text: &str) -> Option<Signature> {
        (!text.as_bytes().contains(&0)).then(|| Signature(self.0.sign(text.as_bytes()).to_bytes()))
    }

    /// X25519 key agreement with the holder of `peer` (both keys in their Montgomery form):
    /// the shared secret, or `None` if `peer` is not a valid key or the result is the
    /// degenerate all-zero point. Symmetric: `a.agree(&b.public()) == b.agree(&a.public())`.
    /// For sealing to an account with an ephemeral key of the sender's; an account key is
    /// otherwise only a signing key.
    pub fn agree(&self, peer: &NodeId) -> Option<[u8; 32]> {
        let peer = ed25519_dalek::VerifyingKey::from_bytes(&peer.0).ok()?;
        let shared = peer
            .to_montgomery()
            .mul_clamped(self.0.to_scalar_bytes())
            .to_bytes();
        (shared != [0; 32]).then_some(shared)
    }

    /// The PKCS#8 v1 DER encoding of this key (what TLS libraries load).
    pub fn to_pkcs8_der(&self) -> Vec<u8> {
        // RFC 8410: SEQUENCE { INTEGER 0, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
        const PREFIX: [u8; 16] = [
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        let mut der = PREFIX.to_vec();
        der.extend_from_slice(&self.seed());
        der
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl NodeId {
    /// Verify a signature made by this key in `domain`.
    pub fn verify(
        &self,
        domain: &str,
        message: &[u8],
        sig: &Signature,
    ) -> Result<(), SignatureError> {
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&self.0).map_err(|_| SignatureError::BadKey)?;
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        key.verify_strict(&domain_message(domain, message), &sig)
            .map_err(|_| SignatureError::Mismatch)
    }

    /// Whether `sig` is this key's signature of `text` made by [`SecretKey::sign_text`].
    pub fn verify_text(&self, text: &str, sig: &Signature) -> bool {
        if text.as_bytes().contains(&0) {
            return false;
        }
        let Ok(key) = ed25519_dalek::VerifyingKey::from_bytes(&self.0) else {
            return false;
        };
        key.verify_strict(
            text.as_bytes(),
            &ed25519_dalek::Signature::from_bytes(&sig.0),
        )
        .is_ok()
    }

    /// [`NodeId::verify`], remembering what verified: the same key, domain, message and
    /// signature are checked once per process (a delegation every row of a session carries, a
    /// row read again and again). What is remembered is the hash of exactly those, so nothing
    /// else can match it; at most [`VERIFIED_MAX`] are kept.
    pub fn verify_once(&self, domain: &str, message: &[u8], sig: &Signature) -> bool {
        let mut name = blake3::Hasher::new_derive_key("weft verified signature v1");
        name.update(&self.0);
        name.update(domain.as_bytes());
        name.update(&[0]);
        name.update(&(message.len() as u64).to_le_bytes());
        name.update(message);
        name.update(&sig.0);
        let name = *name.finalize().as_bytes();
        let verified = VERIFIED.get_or_init(Default::default);
        let lock = || {
            verified
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if lock().contains(&name) {
            return true;
        }
        let ok = self.verify(domain, message, sig).is_ok();
        if ok {
            let mut verified = lock();
            if verified.len() >= VERIFIED_MAX {
                verified.clear();
            }
            verified.insert(name);
        }
        ok
    }
}

/// Signatures this process verified (see [`NodeId::verify_once`]).
static VERIFIED: std::sync::OnceLock<std::sync::Mutex<std::collections::HashSet<[u8; 32]>>> =
    std::sync::OnceLock::new();
/// Most verified signatures remembered (all are forgotten past it, and verified again).
pub const VERIFIED_MAX: usize = 16_384;

fn domain_message(domain: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(domain.len() + 1 + message.len());
    out.extend_from_slice(domain.as_bytes());
    out.push(0);
    out.extend_from_slice(message);
    out
}

impl std::fmt::Debug for Signature {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Signature({}…)", crate::id::hex(&self.0[..4]))
    }
}

mod sig_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let v: &[u8] = <&[u8]>::deserialize(d)?;
        v.try_into()
            .map_err(|_| serde::de::Error::invalid_length(v.len(), &"64 bytes"))
    }
}

/// Whether two secrets (tokens, key secrets) are equal, in time that depends only on their
/// lengths, not on where they first differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_agreement_is_symmetric_and_key_specific() {
        let (a, b, c) = (
            SecretKey::from_seed([1; 32]),
            SecretKey::from_seed([2; 32]),
            SecretKey::from_seed([3; 32]),
        );
        let ab = a.agree(&b.public()).unwrap();
        assert_eq!(ab, b.agree(&a.public()).unwrap());
        assert_ne!(ab, a.agree(&c.public()).unwrap());
        assert_ne!(ab, c.agree(&b.public()).unwrap());
        // The identity point: every agreement with it is degenerate.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(a.agree(&NodeId(identity)), None);
    }

    #[test]
    fn signed_texts_and_domain_signatures_never_stand_for_each_other() {
        let key = SecretKey::from_seed([7; 32]);
        let id = key.public();
        let sig = key.sign_text("origin\n1\nroot\n").unwrap();
        assert!(id.verify_text("origin\n1\nroot\n", &sig));
        assert!(!id.verify_text("origin\n2\nroot\n", &sig));
        // A domain-separated message is domain, NUL, message: no text can be one.
        assert_eq!(key.sign_text("weft/invite\0anything"), None);
        let domained = key.sign("weft/invite", b"anything");
        assert!(!id.verify_text("weft/invite\0anything", &domained));
        // Nor does a signed text verify under any domain.
        assert!(id.verify("origin\n1", b"root\n", &sig).is_err());
    }

    #[test]
    fn signatures_are_domain_separated() {
        let key = SecretKey::from_seed([7; 32]);
        let sig = key.sign("a", b"msg");
        assert_eq!(key.public().verify("a", b"msg", &sig), Ok(()));
        assert_eq!(
            key.public().verify("b", b"msg", &sig),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            key.public().verify("a", b"msh", &sig),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn pkcs8_has_the_rfc8410_shape() {
        let der = SecretKey::from_seed([9; 32]).to_pkcs8_der();
        assert_eq!(der.len(), 48);
        assert_eq!(&der[16..], &[9; 32]);
    }
}
