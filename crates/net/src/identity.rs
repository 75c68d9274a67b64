//! The node key on disk.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use weft_core::SecretKey;

/// A key file could not be read or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// IO failure.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// Readable by others than its owner.
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// Not a key.
    #[error("{path} is not a weft key file (expected 32 bytes, found {len})")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// Load the Ed25519 key at `path`, creating it (mode 0600) if it does not exist.
pub fn load_or_create_key(path: &Path) -> Result<SecretKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    match fs::read(path) {
        Ok(bytes) => {
            let mode = fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyFileError::TooOpen {
                    path: path.to_path_buf(),
                    mode,
                });
            }
            let seed: [u8; 32] =
                bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| KeyFileError::Malformed {
                        path: path.to_path_buf(),
                        len: bytes.len(),
                    })?;
            Ok(SecretKey::from_seed(seed))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(|e| io(std::io::Error::other(e.to_string())))?;
            write_secret_file(path, &seed).map_err(io)?;
            Ok(SecretKey::from_seed(seed))
        }
        Err(e) => Err(io(e)),
    }
}

/// Write a file readable only by its owner, durably (fsync), failing if it already exists.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/node.key");
        let a = load_or_create_key(&path).unwrap();
        let b = load_or_create_key(&path).unwrap();
        assert_eq!(a.public(), b.public());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create_key(&path),
            Err(KeyFileError::TooOpen { .. })
        ));
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            load_or_create_key(&path),
            Err(KeyFileError::Malformed { len: 5, .. })
        ));
    }
}
