//! Signed notes, checkpoints and cosignatures in the formats the transparency-log world uses,
//! so its tools can read and check weft's log:
//! [C2SP signed-note](https://c2sp.org/signed-note) (text, a blank line, then one line per
//! signature: `— <name> <base64(key id ‖ signature)>`), [tlog-checkpoint](https://c2sp.org/tlog-checkpoint)
//! (origin, size, base64 root hash, extension lines) and
//! [tlog-cosignature](https://c2sp.org/tlog-cosignature) (`cosignature/v1`: a witness's
//! Ed25519 signature over the checkpoint with the time it saw it).

use base64::Engine as _;
use weft_core::{NodeId, SecretKey, Signature};

use crate::hash::{Hash, plain_sha256};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// At most this many signature lines are read from a note (more is refused).
pub const MAX_SIGNATURES: usize = 100;
/// A note longer than this is refused.
pub const MAX_NOTE: usize = 64 * 1024;

/// The signature type bytes that go into a key id.
const ED25519: u8 = 0x01;
const COSIGNATURE_V1: u8 = 0x04;

/// A note, checkpoint or key could not be read or made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    /// A key name is empty, or holds whitespace or `+`.
    #[error("a key name must be non-empty, without whitespace or '+': {0:?}")]
    BadName(String),
    /// The note is malformed; says how.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// The checkpoint text is malformed; says how.
    #[error("malformed checkpoint: {0}")]
    BadCheckpoint(&'static str),
    /// A verifier key string is malformed.
    #[error("malformed verifier key")]
    BadKey,
}

fn check_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty() || name.contains('+') || name.chars().any(char::is_whitespace) {
        return Err(NoteError::BadName(name.to_string()));
    }
    Ok(())
}

fn key_id(name: &str, kind: u8, key: &NodeId) -> [u8; 4] {
    let mut bytes = Vec::with_capacity(name.len() + 34);
    bytes.extend_from_slice(name.as_bytes());
    bytes.push(b'\n');
    bytes.push(kind);
    bytes.extend_from_slice(&key.0);
    let hash = plain_sha256(&bytes);
    [hash[0], hash[1], hash[2], hash[3]]
}

/// One signature line of a note.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoteSignature {
    /// The key's name.
    pub name: String,
    /// The key id: the first 4 bytes of SHA-256(name ‖ `\n` ‖ type ‖ public key).
    pub key_id: [u8; 4],
    /// What follows the key id: a signature, or a cosignature's time and signature.
    pub payload: Vec<u8>,
}

impl NoteSignature {
    fn line(&self) -> String {
        let mut bytes = self.key_id.to_vec();
        bytes.extend_from_slice(&self.payload);
        format!("\u{2014} {} {}\n", self.name, B64.encode(bytes))
    }
}

/// A signed note: text and the signatures over it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in a newline.
    pub text: String,
    /// Its signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

impl Note {
    /// Parse a note. Bounded: at most [`MAX_NOTE`] bytes and [`MAX_SIGNATURES`] signatures;
    /// the text must end in a newline and hold no NUL or other control character but newline.
    pub fn parse(note: &str) -> Result<Note, NoteError> {
        if note.len() > MAX_NOTE {
            return Err(NoteError::Malformed("longer than 64 KiB"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before the signatures"))?;
        let text = &note[..split + 1];
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed("a control character in the text"));
        }
        let lines = &note[split + 2..];
        if !lines.ends_with('\n') {
            return Err(NoteError::Malformed(
                "the last signature line has no newline",
            ));
        }
        let mut signatures = Vec::new();
        for line in lines[..lines.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            let rest = line.strip_prefix("\u{2014} ").ok_or(NoteError::Malformed(
                "a signature line must start with an em dash",
            ))?;
            let (name, sig) = rest.split_once(' ').ok_or(NoteError::Malformed(
                "a signature line needs a name and a signature",
            ))?;
            check_name(name).map_err(|_| NoteError::Malformed("a signature's key name"))?;
            let bytes = B64
                .decode(sig)
                .map_err(|_| NoteError::Malformed("a signature is not base64"))?;
            if bytes.len() < 5 {
                return Err(NoteError::Malformed("a signature is too short"));
            }
            signatures.push(NoteSignature {
                name: name.to_string(),
                key_id: [bytes[0], bytes[1], bytes[2], bytes[3]],
                payload: bytes[4..].to_vec(),
            });
        }
        if signatures.is_empty() {
            return Err(NoteError::Malformed("no signatures"));
        }
        Ok(Note {
            text: text.to_string(),
            signatures,
        })
    }

    /// The note as text.
    pub fn encode(&self) -> String {
        let mut out = self.text.clone();
        out.push('\n');
        for sig in &self.signatures {
            out.push_str(&sig.line());
        }
        out
    }

    /// Whether `verifier` signed this note.
    pub fn signed_by(&self, verifier: &Verifier) -> bool {
        let id = verifier.key_id();
        self.signatures.iter().any(|s| {
            s.name == verifier.name
                && s.key_id == id
                && signature(&s.payload)
                    .is_some_and(|sig| verifier.key.verify_text(&self.text, &sig))
        })
    }

    /// The time at which `witness` cosigned this note, if it did.
    pub fn cosigned_by(&self, witness: &Verifier) -> Option<u64> {
        let id = key_id(&witness.name, COSIGNATURE_V1, &witness.key);
        self.signatures.iter().find_map(|s| {
            if s.name != witness.name || s.key_id != id || s.payload.len() != 72 {
                return None;
            }
            let time = u64::from_be_bytes(s.payload[..8].try_into().ok()?);
            let sig = signature(&s.payload[8..])?;
            witness
                .key
                .verify_text(&cosigned_message(time, &self.text), &sig)
                .then_some(time)
        })
    }

    /// Add a signature line unless one with its name and key id is there.
    pub fn add(&mut self, signature: NoteSignature) {
        if !self
            .signatures
            .iter()
            .any(|s| s.name == signature.name && s.key_id == signature.key_id)
        {
            self.signatures.push(signature);
        }
    }
}

fn signature(bytes: &[u8]) -> Option<Signature> {
    Some(Signature(bytes.try_into().ok()?))
}

fn cosigned_message(time: u64, text: &str) -> String {
    format!("cosignature/v1\ntime {time}\n{text}")
}

/// A named Ed25519 key that signs notes (a log) or cosigns checkpoints (a witness).
#[derive(Clone, Debug)]
pub struct Signer {
    name: String,
    key: SecretKey,
}

impl Signer {
    /// A signer called `name` (no whitespace or `+`).
    pub fn new(name: &str, key: SecretKey) -> Result<Signer, NoteError> {
        check_name(name)?;
        Ok(Signer {
            name: name.to_string(),
            key,
        })
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Who checks this signer's signatures.
    pub fn verifier(&self) -> Verifier {
        Verifier {
            name: self.name.clone(),
            key: self.key.public(),
        }
    }

    /// Sign `text` (which must end in a newline and hold no control character but newline)
    /// as a note.
    pub fn sign(&self, text: &str) -> Result<Note, NoteError> {
        let line = self.signature(text)?;
        Ok(Note {
            text: text.to_string(),
            signatures: vec![line],
        })
    }

    /// This signer's signature line over `text`.
    pub fn signature(&self, text: &str) -> Result<NoteSignature, NoteError> {
        if !text.ends_with('\n') || text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed(
                "text must end in a newline and hold no other control character",
            ));
        }
        let sig = self
            .key
            .sign_text(text)
            .ok_or(NoteError::Malformed("a NUL in the text"))?;
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: key_id(&self.name, ED25519, &self.key.public()),
            payload: sig.0.to_vec(),
        })
    }

    /// A `cosignature/v1` line over the checkpoint `text`, made at `time` (Unix seconds).
    pub fn cosignature(&self, text: &str, time: u64) -> Result<NoteSignature, NoteError> {
        let sig = self
            .key
            .sign_text(&cosigned_message(time, text))
            .ok_or(NoteError::Malformed("a NUL in the text"))?;
        let mut payload = time.to_be_bytes().to_vec();
        payload.extend_from_slice(&sig.0);
        Ok(NoteSignature {
            name: self.name.clone(),
            key_id: key_id(&self.name, COSIGNATURE_V1, &self.key.public()),
            payload,
        })
    }
}

/// A named public key that checks notes or cosignatures.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Verifier {
    /// The key's name.
    pub name: String,
    /// The Ed25519 public key.
    pub key: NodeId,
}

impl Verifier {
    /// The key id of its note signatures.
    pub fn key_id(&self) -> [u8; 4] {
        key_id(&self.name, ED25519, &self.key)
    }

    /// The verifier key string other tools take: `name+<key id hex>+<base64(0x01 ‖ key)>`.
    pub fn encode(&self) -> String {
        let id: String = self.key_id().iter().map(|b| format!("{b:02x}")).collect();
        let mut key = vec![ED25519];
        key.extend_from_slice(&self.key.0);
        format!("{}+{id}+{}", self.name, B64.encode(key))
    }

    /// Parse [`Verifier::encode`]'s form.
    pub fn parse(text: &str) -> Result<Verifier, NoteError> {
        let mut parts = text.split('+');
        let (Some(name), Some(id), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::BadKey);
        };
        check_name(name)?;
        let key = B64.decode(key).map_err(|_| NoteError::BadKey)?;
        if key.len() != 33 || key[0] != ED25519 {
            return Err(NoteError::BadKey);
        }
        let verifier = Verifier {
            name: name.to_string(),
            key: NodeId(key[1..].try_into().map_err(|_| NoteError::BadKey)?),
        };
        let want: String = verifier
            .key_id()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if id != want {
            return Err(NoteError::BadKey);
        }
        Ok(verifier)
    }
}

/// A checkpoint: a log's size and root hash, under its origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name (a schema-less URL by convention).
    pub origin: String,
    /// How many entries.
    pub size: u64,
    /// The tree hash.
    pub root: Hash,
    /// Extension lines, each without its newline.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The checkpoint's note text.
    pub fn text(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            self.root.to_base64()
        );
        for line in &self.extensions {
            out.push_str(line);
            out.push('\n');
        }
        out
    }

    /// Parse a checkpoint's note text.
    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(NoteError::BadCheckpoint("no final newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(NoteError::BadCheckpoint("no origin"))?;
        let size = lines
            .next()
            .filter(|s| s == &"0" || (!s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit())))
            .and_then(|s| s.parse().ok())
            .ok_or(NoteError::BadCheckpoint("the size is not a decimal number"))?;
        let root = lines
            .next()
            .and_then(Hash::from_base64)
            .ok_or(NoteError::BadCheckpoint("the root is not a base64 hash"))?;
        let extensions: Vec<String> = lines.map(String::from).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(NoteError::BadCheckpoint("an empty extension line"));
        }
        Ok(Checkpoint {
            origin: origin.to_string(),
            size,
            root,
            extensions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(name: &str, seed: u8) -> Signer {
        Signer::new(name, SecretKey::from_seed([seed; 32])).unwrap()
    }

    #[test]
    fn a_signed_checkpoint_reads_back_and_verifies_only_unchanged() {
        let log = signer("example.com/log", 1);
        let checkpoint = Checkpoint {
            origin: "example.com/log".into(),
            size: 42,
            root: crate::leaf_hash(b"x"),
            extensions: vec![],
        };
        let note = log.sign(&checkpoint.text()).unwrap();
        let text = note.encode();
        let back = Note::parse(&text).unwrap();
        assert_eq!(back, note);
        assert!(back.signed_by(&log.verifier()));
        assert!(!back.signed_by(&signer("example.com/log", 2).verifier()));
        assert_eq!(Checkpoint::parse(&back.text).unwrap(), checkpoint);
        let forged = Note {
            text: back.text.replace("42", "43"),
            ..back.clone()
        };
        assert!(!forged.signed_by(&log.verifier()));
        let verifier = Verifier::parse(&log.verifier().encode()).unwrap();
        assert_eq!(verifier, log.verifier());
    }

    #[test]
    fn cosignatures_carry_their_time_and_bind_the_checkpoint() {
        let log = signer("log", 1);
        let witness = signer("witness", 3);
        let text = "log\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n";
        let mut note = log.sign(text).unwrap();
        note.add(witness.cosignature(text, 1_700_000_000).unwrap());
        let back = Note::parse(&note.encode()).unwrap();
        assert_eq!(back.cosigned_by(&witness.verifier()), Some(1_700_000_000));
        // A cosignature is not a note signature, nor the reverse.
        assert!(!back.signed_by(&witness.verifier()));
        assert_eq!(back.cosigned_by(&log.verifier()), None);
        let other = log
            .sign("log\n2\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n")
            .unwrap();
        let moved = Note {
            text: other.text,
            signatures: back.signatures.clone(),
        };
        assert_eq!(moved.cosigned_by(&witness.verifier()), None);
    }

    #[test]
    fn malformed_notes_and_checkpoints_are_refused() {
        for bad in [
            "",
            "text\n",
            "text\n\n",
            "text\n\n— name\n",
            "text\n\n- name AAAAAAAA\n",
            "text\n\n— name AAAAAAAA",
            "te\u{7}xt\n\n— name AAAAAAAA\n",
            "text\n\n— na+me AAAAAAAA\n",
            "text\n\n— name !!!!\n",
        ] {
            assert!(Note::parse(bad).is_err(), "{bad:?}");
        }
        let many = format!("text\n\n{}", "— n AAAAAAAA\n".repeat(MAX_SIGNATURES + 1));
        assert!(Note::parse(&many).is_err());
        for bad in [
            "",
            "origin\n",
            "origin\n01\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "origin\n-1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n",
            "origin\n1\nAAAA\n",
            "origin\n1\n47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
        ] {
            assert!(Checkpoint::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Signer::new("a b", SecretKey::from_seed([1; 32])).is_err());
        assert!(Verifier::parse("name+00000000+AAAA").is_err());
    }
}
