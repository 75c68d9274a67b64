//! Where the test models are: `scripts/models.sh` installs them (once) and prints their paths.

use std::path::PathBuf;
use std::sync::OnceLock;

/// The model files `scripts/models.sh` reports (each test file reads one of them).
#[allow(dead_code)]
pub struct ModelPaths {
    /// Folder of all-MiniLM-L6-v2.
    pub minilm: PathBuf,
    /// SmolLM2-135M-Instruct's GGUF file.
    pub smollm2: PathBuf,
}

/// Runs `scripts/models.sh` the first time it is called.
pub fn models() -> &'static ModelPaths {
    static PATHS: OnceLock<ModelPaths> = OnceLock::new();
    PATHS.get_or_init(|| {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let script = repo.join("scripts/models.sh");
        let out = std::process::Command::new(&script)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "{} does not run ({e}); exists: {:?}, cwd: {:?}, /dev/null: {:?}, env: {:?}",
                    script.display(),
                    script.metadata().map(|m| m.len()),
                    std::env::current_dir(),
                    std::fs::metadata("/dev/null").map(|m| m.file_type()),
                    std::env::vars()
                        .filter(|(k, _)| k == "PATH" || k == "HOME")
                        .collect::<Vec<_>>()
                )
            });
        assert!(
            out.status.success(),
            "scripts/models.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).expect("models.sh prints UTF-8");
        let path = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(PathBuf::from)
                .unwrap_or_else(|| panic!("models.sh printed no {key}= line: {stdout}"))
        };
        ModelPaths {
            minilm: path("minilm"),
            smollm2: path("smollm2"),
        }
    })
}
