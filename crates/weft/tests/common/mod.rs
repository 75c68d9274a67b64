//! Helpers the CLI tests share: the real `weft` binary, users with accounts, `weft up`
//! fabrics.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub fn weft(args: &[&str]) -> Output {
    // No account unless a test makes one (see `User`).
    static NOBODY: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let nobody = NOBODY.get_or_init(|| tempfile::tempdir().unwrap());
    weft_as(nobody.path(), args)
}

pub fn weft_as(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("WEFT_DATA")
        .env_remove("WEFT_ACCOUNT")
        .env_remove("WEFT_NODE")
        .env("HOME", std::env::temp_dir())
        .env("WEFT_CONFIG", config)
        .stdin(Stdio::null())
        .output()
        .expect("weft runs")
}

/// A person: their own config dir (accounts), their own commands.
pub struct User {
    pub config: tempfile::TempDir,
}

impl User {
    /// Someone with a new account, and its recovery phrase.
    pub fn with_account() -> (User, String) {
        let user = User {
            config: tempfile::tempdir().unwrap(),
        };
        let out = user.ok(&["account", "create"]);
        let phrase = out
            .lines()
            .skip_while(|l| !l.starts_with("Recovery phrase"))
            .nth(1)
            .unwrap_or_else(|| panic!("no phrase in {out}"))
            .trim()
            .to_string();
        assert_eq!(phrase.split_whitespace().count(), 24, "{out}");
        (user, phrase)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = weft_as(self.config.path(), args);
        assert!(
            out.status.success(),
            "weft {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    pub fn fails(&self, args: &[&str]) -> String {
        let out = weft_as(self.config.path(), args);
        assert!(!out.status.success(), "weft {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

pub fn ok(args: &[&str]) -> String {
    let out = weft(args);
    assert!(
        out.status.success(),
        "weft {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn fails(args: &[&str]) -> String {
    let out = weft(args);
    assert!(!out.status.success(), "weft {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

pub fn nodes(dir: &Path) -> Vec<Value> {
    let out = weft(&["--data", dir.to_str().unwrap(), "nodes", "--json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

pub fn state_of(rows: &[Value], id: &str) -> Option<String> {
    rows.iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["state"].as_str().map(String::from))
}

pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    start.elapsed()
}

/// Send `sig` (e.g. "-9") to the node process running on `dir`; its pid.
pub fn signal(dir: &Path, sig: &str) -> i32 {
    let pid: i32 = std::fs::read_to_string(dir.join("node.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    pid
}

/// A `weft up` fabric, stopped on drop.
pub struct Local {
    pub dir: tempfile::TempDir,
}

impl Local {
    pub fn up(extra: &[&str]) -> Local {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "up",
            "--dir",
            dir.path().to_str().unwrap(),
            "--timeout",
            "30",
        ];
        args.extend_from_slice(extra);
        ok(&args);
        Local { dir }
    }

    pub fn node(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("node{n}"))
    }

    pub fn id(&self, n: usize) -> String {
        let out = ok(&["--data", self.node(n).to_str().unwrap(), "status", "--json"]);
        serde_json::from_str::<Value>(&out).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    }
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = weft(&["down", "--dir", self.dir.path().to_str().unwrap()]);
    }
}

/// Node id → (node number, site) of a local fabric's first `n` nodes.
pub fn sites(fabric: &Local, n: usize) -> std::collections::HashMap<String, (usize, String)> {
    (1..=n)
        .map(|i| {
            let out = ok(&[
                "--data",
                fabric.node(i).to_str().unwrap(),
                "status",
                "--json",
            ]);
            let v: Value = serde_json::from_str(&out).unwrap();
            (
                v["id"].as_str().unwrap().to_string(),
                (i, v["site"].as_str().unwrap().to_string()),
            )
        })
        .collect()
}

/// The model files `scripts/models.sh` installs: (MiniLM folder, SmolLM2 GGUF).
pub fn models() -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(repo.join("scripts/models.sh"))
        .output()
        .expect("scripts/models.sh runs");
    assert!(
        out.status.success(),
        "scripts/models.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let path = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("no {k}= in {text}"))
    };
    (path("minilm"), path("smollm2"))
}

/// The model's replicas as `weft model ls --json` shows them: (node, state, error).
pub fn replicas(user: &User, node: &str, model: &str) -> Vec<(String, String, String)> {
    let out = user.ok(&["--data", node, "model", "ls", "--json"]);
    let all: Vec<Value> = serde_json::from_str(&out).unwrap();
    all.iter()
        .find(|m| m["name"] == model)
        .map(|m| {
            m["replicas_now"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    (
                        r["node"].as_str().unwrap().to_string(),
                        r["state"].as_str().unwrap().to_string(),
                        r["error"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

pub fn ready(user: &User, node: &str, model: &str) -> Vec<String> {
    replicas(user, node, model)
        .into_iter()
        .filter(|(_, s, _)| s == "ready")
        .map(|(n, _, _)| n)
        .collect()
}
