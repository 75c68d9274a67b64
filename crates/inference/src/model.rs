//! A model as the fabric knows it: a name claimed fabric-wide (like a bucket's) by the account
//! that added it, its files (weights, tokenizer, config) as objects of one of that account's
//! buckets — named in the row by capability and BLAKE3 —, how many replicas should serve it
//! and where they may be; and each node's word on whether it serves it.
//!
//! What a member can see: a model's name, kind, file sizes and hashes, and capabilities that
//! read its files — weights are shared with the nodes that serve them. Prompts are not in any
//! row.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use weft_core::NodeId;
use weft_data::{BucketError, Capability};
use weft_meta::MetaError;

/// Most replicas a model may ask for.
pub const MAX_REPLICAS: u32 = 64;

/// What a model does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Chat and completions (a GGUF file).
    Chat,
    /// Sentence embeddings (`config.json`, `tokenizer.json`, `model.safetensors`).
    Embeddings,
}

impl ModelKind {
    /// The files a model of this kind must have.
    pub fn required(self) -> &'static [&'static str] {
        match self {
            ModelKind::Chat => &[],
            ModelKind::Embeddings => &["config.json", "tokenizer.json", "model.safetensors"],
        }
    }
}

impl std::fmt::Display for ModelKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ModelKind::Chat => "chat",
            ModelKind::Embeddings => "embeddings",
        })
    }
}

/// One file of a model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelFile {
    /// Its file name (no folders).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// BLAKE3 of its bytes (hex): a node checks what it fetched against it.
    pub blake3: String,
    /// A capability that reads it.
    pub capability: String,
}

/// A model's row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelRecord {
    /// Its name.
    pub name: String,
    /// The account that added it.
    pub owner: NodeId,
    /// What it does.
    pub kind: ModelKind,
    /// Its files.
    pub files: Vec<ModelFile>,
    /// How many nodes should serve it.
    pub replicas: u32,
    /// Regions its replicas may be in (empty: any).
    pub regions: Vec<String>,
    /// Jurisdictions its replicas may be in (empty: any).
    pub jurisdictions: Vec<String>,
    /// Unix ms it was added.
    pub created_ms: u64,
}

impl ModelRecord {
    /// Bytes of its files.
    pub fn size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Memory a node needs to hold it loaded (weights may be widened at load: twice the files).
    pub fn memory_needed(&self) -> u64 {
        self.size().saturating_mul(2)
    }

    /// Its identity as loaded: a change of files is a new model to load.
    pub fn digest(&self) -> String {
        let mut h = blake3::Hasher::new_derive_key("weft model files v1");
        for f in &self.files {
            h.update(f.name.as_bytes());
            h.update(&[0]);
            h.update(f.blake3.as_bytes());
            h.update(&[0]);
        }
        h.finalize().to_hex()[..32].to_string()
    }

    /// Check what an account may put in a row.
    pub fn validate(&self) -> Result<(), ModelError> {
        check_model_name(&self.name)?;
        if self.files.is_empty() {
            return Err(ModelError::Invalid(
                "a model needs at least one file".into(),
            ));
        }
        let mut names = HashSet::new();
        for f in &self.files {
            let plain = !f.name.is_empty()
                && f.name != "."
                && f.name != ".."
                && !f.name.contains(['/', '\\', '\0']);
            if !plain || !names.insert(f.name.as_str()) {
                return Err(ModelError::Invalid(format!(
                    "file name {:?}: plain, distinct file names only",
                    f.name
                )));
            }
            if f.blake3.len() != 64 || !f.blake3.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(ModelError::Invalid(format!(
                    "file {}: blake3 must be 64 hex digits",
                    f.name
                )));
            }
            Capability::from_text(&f.capability)
                .map_err(|e| ModelError::Invalid(format!("file {}: capability: {e}", f.name)))?;
        }
        for need in self.kind.required() {
            if !names.contains(need) {
                return Err(ModelError::Invalid(format!(
                    "a {} model needs {need} (it has {})",
                    self.kind,
                    self.files
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        if self.kind == ModelKind::Chat
            && (self.files.len() != 1 || !self.files[0].name.ends_with(".gguf"))
        {
            return Err(ModelError::Invalid("a chat model is one .gguf file".into()));
        }
        if !(1..=MAX_REPLICAS).contains(&self.replicas) {
            return Err(ModelError::Invalid(format!(
                "replicas: 1 to {MAX_REPLICAS}, not {}",
                self.replicas
            )));
        }
        Ok(())
    }
}

/// Model names: 1 to 64 of lowercase letters, digits, `-`, `_`, `.`.
pub fn check_model_name(name: &str) -> Result<(), ModelError> {
    let ok = (1..=64).contains(&name.len())
        && name.chars().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_' || c == '.'
        })
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(ModelError::Invalid(format!(
            "model name {name:?}: 1 to 64 lowercase letters, digits, '-', '_' or '.', starting with a letter or digit"
        )))
    }
}

/// A node's word on a model it holds (its `serve` row).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Serving {
    /// The model's files it holds ([`ModelRecord::digest`]).
    pub digest: String,
    /// Loaded and answering.
    pub ready: bool,
    /// Why it could not load it.
    pub error: Option<String>,
    /// Unix ms of this state.
    pub since_ms: u64,
}

/// Model failures.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A bad request.
    #[error("{0}")]
    Invalid(String),
    /// The name is taken.
    #[error("model {0:?} already exists (another account's, or yours: `weft model ls`)")]
    Exists(String),
    /// No such model.
    #[error("no model named {0:?} (`weft model ls` lists them)")]
    NoModel(String),
    /// Another account's model.
    #[error("model {0:?} belongs to another account")]
    NotOwner(String),
    /// Bucket trouble (authorization included).
    #[error(transparent)]
    Bucket(#[from] BucketError),
    /// Metadata table trouble.
    #[error(transparent)]
    Meta(#[from] MetaError),
}

/// A node's part in serving a model, as listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelReplica {
    /// The node (hex id).
    pub node: String,
    /// Its site.
    pub site: String,
    /// Its region.
    pub region: String,
    /// `ready`, `loading`, `failed` (see `error`), or `placed` (chosen, not started yet).
    pub state: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// One model, as listed: its row, and where it is served now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelListing {
    /// Its row.
    #[serde(flatten)]
    pub model: ModelRecord,
    /// Bytes of its files.
    pub size: u64,
    /// The nodes the placement picks now, and those that still say they hold it.
    pub replicas_now: Vec<ModelReplica>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> ModelRecord {
        ModelRecord {
            name: "minilm".into(),
            owner: weft_core::SecretKey::from_seed([9; 32]).public(),
            kind: ModelKind::Embeddings,
            files: vec![ModelFile {
                name: "model.safetensors".into(),
                size: 100 << 20,
                blake3: "ab".repeat(32),
                capability: String::new(),
            }],
            replicas: 1,
            regions: vec![],
            jurisdictions: vec![],
            created_ms: 0,
        }
    }

    /// [untrusted] 7: a model row written around the API (any account can sign its own rows)
    /// whose names or hashes would become paths outside the model cache is never acted on.
    #[test]
    fn a_model_row_cannot_name_files_outside_the_cache() {
        let cap = Capability {
            manifest: weft_core::ContentHash([1; 32]),
            key: [2; 32],
            holders: vec![],
            inline: None,
        }
        .to_text();
        let file = |name: &str, blake3: &str| ModelFile {
            name: name.into(),
            size: 1,
            blake3: blake3.into(),
            capability: cap.clone(),
        };
        let mut good = model();
        good.kind = ModelKind::Chat;
        good.files = vec![file("smol.gguf", &"ab".repeat(32))];
        let evil = |f: &dyn Fn(&mut ModelRecord)| {
            let mut m = good.clone();
            f(&mut m);
            m
        };
        let rows = vec![
            good.clone(),
            evil(&|m| m.files[0].name = "/etc/cron.d/x.gguf".into()),
            evil(&|m| m.files[0].name = "../../x.gguf".into()),
            evil(&|m| m.files[0].blake3 = "../../../../tmp/owned".into()),
            evil(&|m| m.name = "../x".into()),
        ];
        assert_eq!(crate::schema::usable(rows), vec![good]);
    }

    #[test]
    fn bad_models_are_refused_with_the_reason() {
        let cap = Capability {
            manifest: weft_core::ContentHash([1; 32]),
            key: [2; 32],
            holders: vec![],
            inline: None,
        }
        .to_text();
        let file = |name: &str| ModelFile {
            name: name.into(),
            size: 1,
            blake3: "ab".repeat(32),
            capability: cap.clone(),
        };
        let mut good = model();
        good.files = ["config.json", "tokenizer.json", "model.safetensors"]
            .iter()
            .map(|n| file(n))
            .collect();
        good.validate().unwrap();
        let err = |f: &dyn Fn(&mut ModelRecord)| {
            let mut m = good.clone();
            f(&mut m);
            m.validate().unwrap_err().to_string()
        };
        assert!(err(&|m| m.files[0].capability = "weft-cap1-nope".into()).contains("capability"));
        assert!(err(&|m| m.name = "Bad Name".into()).contains("model name"));
        assert!(err(&|m| m.replicas = 0).contains("replicas"));
        assert!(err(&|m| m.files.pop().map(|_| ()).unwrap()).contains("needs model.safetensors"));
        assert!(err(&|m| m.files[1].name = "../x".into()).contains("plain"));
        assert!(err(&|m| m.files[1].name = "config.json".into()).contains("distinct"));
        assert!(err(&|m| m.files[0].blake3 = "zz".into()).contains("64 hex"));
        assert!(err(&|m| m.kind = ModelKind::Chat).contains("one .gguf"));
        let mut chat = good.clone();
        chat.kind = ModelKind::Chat;
        chat.files = vec![file("smol.gguf")];
        chat.validate().unwrap();
        assert_ne!(chat.digest(), good.digest());
    }
}
