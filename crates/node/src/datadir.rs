//! The node's data directory: keys, fabric identity, membership certificate, used invites.
//!
//! Layout (all secrets mode 0600):
//! - `node.key`        the node's Ed25519 seed
//! - `admin.key`       the fabric admin seed (only on nodes that created the fabric)
//! - `fabric.json`     the fabric's admin public key and known bootstrap addresses
//! - `membership.cert` the node's membership certificate (postcard)
//! - `used-invites`    nonces of invites this node has redeemed for others, one hex per line

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use weft_core::{MembershipCert, NodeId, SecretKey, wire};
use weft_net::{KeyFileError, load_or_create_key, write_secret_file};

/// Data-directory failures.
#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    /// IO failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// A key file problem.
    #[error(transparent)]
    Key(#[from] KeyFileError),
    /// A file that does not parse.
    #[error("{path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The node has not joined a fabric.
    #[error("{0} holds no fabric membership: run `weft init` or `weft join <invite>` first")]
    NotAMember(PathBuf),
    /// `init` or `join` on a directory that already belongs to a fabric.
    #[error("{0} already belongs to fabric {1}; use another --data directory")]
    AlreadyAMember(PathBuf, String),
}

/// The fabric this node belongs to, as stored in `fabric.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FabricFile {
    /// The admin public key (hex).
    pub admin: String,
    /// Addresses to contact at start.
    pub bootstrap: Vec<SocketAddr>,
}

/// A node's data directory.
#[derive(Clone, Debug)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Open (creating it if needed) the directory at `root`.
    pub fn open(root: &Path) -> Result<DataDir, DataDirError> {
        fs::create_dir_all(root).map_err(|source| DataDirError::Io {
            path: root.to_path_buf(),
            source,
        })?;
        Ok(DataDir {
            root: root.to_path_buf(),
        })
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A path inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The node key, created on first use.
    pub fn node_key(&self) -> Result<SecretKey, DataDirError> {
        Ok(load_or_create_key(&self.path("node.key"))?)
    }

    /// The admin key, if this node holds it.
    pub fn admin_key(&self) -> Result<Option<SecretKey>, DataDirError> {
        if !self.path("admin.key").exists() {
            return Ok(None);
        }
        Ok(Some(load_or_create_key(&self.path("admin.key"))?))
    }

    /// Create the admin key (fails if one exists).
    pub fn create_admin_key(&self) -> Result<SecretKey, DataDirError> {
        let path = self.path("admin.key");
        if path.exists() {
            return Err(DataDirError::Corrupt {
                path,
                reason: "an admin key already exists".into(),
            });
        }
        Ok(load_or_create_key(&path)?)
    }

    /// The fabric file, if the node has joined.
    pub fn fabric(&self) -> Result<Option<(NodeId, FabricFile)>, DataDirError> {
        let path = self.path("fabric.json");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(DataDirError::Io { path, source }),
        };
        let file: FabricFile = serde_json::from_str(&text).map_err(|e| DataDirError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let admin = file.admin.parse().map_err(|e| DataDirError::Corrupt {
            path,
            reason: format!("admin key: {e}"),
        })?;
        Ok(Some((admin, file)))
    }

    /// Write the fabric file and the membership certificate (the act of becoming a member).
    pub fn save_membership(
        &self,
        admin: &NodeId,
        bootstrap: &[SocketAddr],
        cert: &MembershipCert,
    ) -> Result<(), DataDirError> {
        let file = FabricFile {
            admin: admin.to_hex(),
            bootstrap: bootstrap.to_vec(),
        };
        let json = serde_json::to_string_pretty(&file).unwrap_or_default();
        self.write_atomic("membership.cert", &wire::encode(cert))?;
        self.write_atomic("fabric.json", json.as_bytes())
    }

    /// The membership certificate.
    pub fn membership(&self) -> Result<MembershipCert, DataDirError> {
        let path = self.path("membership.cert");
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataDirError::NotAMember(self.root.clone()));
            }
            Err(source) => return Err(DataDirError::Io { path, source }),
        };
        wire::decode(&bytes).map_err(|e| DataDirError::Corrupt {
            path,
            reason: e.to_string(),
        })
    }

    /// Refuse to init/join twice.
    pub fn ensure_not_member(&self) -> Result<(), DataDirError> {
        if let Some((admin, _)) = self.fabric()? {
            let fabric = weft_core::FabricId::from_admin_key(&admin);
            return Err(DataDirError::AlreadyAMember(
                self.root.clone(),
                fabric.to_hex(),
            ));
        }
        Ok(())
    }

    /// Nonces of invites already redeemed here.
    pub fn used_invites(&self) -> Result<HashSet<String>, DataDirError> {
        let path = self.path("used-invites");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text.lines().map(|l| l.trim().to_string()).collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashSet::new()),
            Err(source) => Err(DataDirError::Io { path, source }),
        }
    }

    /// Durably record that an invite was redeemed (before the certificate is handed out).
    pub fn mark_invite_used(&self, nonce_hex: &str) -> Result<(), DataDirError> {
        let path = self.path("used-invites");
        let io = |source| DataDirError::Io {
            path: path.clone(),
            source,
        };
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io)?;
        writeln!(f, "{nonce_hex}").map_err(io)?;
        f.sync_all().map_err(io)
    }

    /// A random secret token for the local API, created once.
    pub fn api_token(&self) -> Result<String, DataDirError> {
        let path = self.path("api.token");
        match fs::read_to_string(&path) {
            Ok(t) => Ok(t.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut raw = [0u8; 24];
                getrandom::fill(&mut raw).map_err(|e| DataDirError::Io {
                    path: path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })?;
                let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                write_secret_file(&path, token.as_bytes())
                    .map_err(|source| DataDirError::Io { path, source })?;
                Ok(token)
            }
            Err(source) => Err(DataDirError::Io { path, source }),
        }
    }

    /// Write a small file atomically (temp file, fsync, rename, fsync dir).
    pub fn write_atomic(&self, name: &str, contents: &[u8]) -> Result<(), DataDirError> {
        let path = self.path(name);
        let tmp = self.path(&format!(".{name}.tmp"));
        let io = |source| DataDirError::Io {
            path: path.clone(),
            source,
        };
        {
            let mut f = fs::File::create(&tmp).map_err(io)?;
            f.write_all(contents).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        fs::rename(&tmp, &path).map_err(io)?;
        if let Ok(dir) = fs::File::open(&self.root) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}
