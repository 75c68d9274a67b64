//! The `weft` binary run as a person runs it: commands that must succeed or fail, people with
//! accounts of their own, `weft up` fabrics. These helpers panic with the command's output on
//! a surprise: they are for tests.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::Value;

use crate::local::LocalFabric;
use crate::process;

/// Run `weft ARGS…` as nobody in particular (no account).
pub fn weft(args: &[&str]) -> Output {
    static NOBODY: OnceLock<tempfile::TempDir> = OnceLock::new();
    let nobody = NOBODY.get_or_init(|| tempfile::tempdir().expect("a temporary folder"));
    weft_as(nobody.path(), args)
}

/// Run `weft ARGS…` with `config` as the person's config folder (their accounts), no stdin.
pub fn weft_as(config: &Path, args: &[&str]) -> Output {
    Command::new(process::binary())
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

fn stdout_of(args: &[&str], out: Output) -> String {
    assert!(
        out.status.success(),
        "weft {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// `weft ARGS…` must succeed: its standard output.
pub fn ok(args: &[&str]) -> String {
    stdout_of(args, weft(args))
}

/// `weft ARGS…` must fail: its standard error.
pub fn fails(args: &[&str]) -> String {
    let out = weft(args);
    assert!(!out.status.success(), "weft {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

/// A person: their own config folder (accounts), their own commands.
pub struct User {
    /// Their config folder.
    pub config: tempfile::TempDir,
}

impl User {
    /// Someone with a new account, and its recovery phrase.
    pub fn with_account() -> (User, String) {
        let user = User {
            config: tempfile::tempdir().expect("a temporary folder"),
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

    /// Their `weft ARGS…` must succeed: its standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        stdout_of(args, weft_as(self.config.path(), args))
    }

    /// Their `weft ARGS…`, whatever it does: its output.
    pub fn run(&self, args: &[&str]) -> Output {
        weft_as(self.config.path(), args)
    }

    /// Their `weft ARGS…` must fail: its standard error.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = weft_as(self.config.path(), args);
        assert!(!out.status.success(), "weft {args:?} should have failed");
        String::from_utf8_lossy(&out.stderr).to_string()
    }
}

/// A `weft up` fabric with raw flags (`--timeout 60`, `weft up`'s own default, unless given:
/// the whole suite runs several fabrics at once on two cores), stopped on drop.
pub fn up(flags: &[&str]) -> LocalFabric {
    let mut args: Vec<&str> = vec!["--timeout", "60"];
    args.extend_from_slice(flags);
    LocalFabric::up_args(&args, None)
        .unwrap_or_else(|e| panic!("weft up {flags:?}: {e:#}"))
        .0
}

/// `weft nodes --json` as the node in `dir` sees them.
pub fn nodes(dir: &Path) -> Vec<Value> {
    let out = weft(&["--data", &dir.to_string_lossy(), "nodes", "--json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// The state of node `id` in `rows` (from [`nodes`]).
pub fn state_of(rows: &[Value], id: &str) -> Option<String> {
    rows.iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["state"].as_str().map(String::from))
}

/// `weft status --json` of the node in `dir`.
pub fn status(dir: &Path) -> Value {
    let out = ok(&["--data", &dir.to_string_lossy(), "status", "--json"]);
    serde_json::from_str(&out).expect("status is JSON")
}

/// The id of the node in `dir`.
pub fn id(dir: &Path) -> String {
    status(dir)["id"]
        .as_str()
        .expect("an id in the status")
        .to_string()
}

/// Send `sig` (as `kill` takes it: "-9", "-TERM") to the node process running in `dir`; its
/// pid.
pub fn signal(dir: &Path, sig: &str) -> i32 {
    let pid: i32 = std::fs::read_to_string(dir.join("node.pid"))
        .expect("a pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert!(
        Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs")
            .success()
    );
    pid
}

/// Node id → (node number, site) of a local fabric's first `n` nodes.
pub fn sites(fabric: &LocalFabric, n: usize) -> std::collections::HashMap<String, (usize, String)> {
    (1..=n)
        .map(|i| {
            let v = status(&fabric.node(i));
            (
                v["id"].as_str().expect("an id").to_string(),
                (i, v["site"].as_str().expect("a site").to_string()),
            )
        })
        .collect()
}

/// The model files `scripts/models.sh` installs: (MiniLM folder, SmolLM2 GGUF).
pub fn models() -> (PathBuf, PathBuf) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new(repo.join("scripts/models.sh"))
        .output()
        .expect("scripts/models.sh runs");
    assert!(
        out.status.success(),
        "scripts/models.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("paths as text");
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
    let all: Vec<Value> = serde_json::from_str(&out).expect("models as JSON");
    all.iter()
        .find(|m| m["name"] == model)
        .map(|m| {
            m["replicas_now"]
                .as_array()
                .expect("a list of replicas")
                .iter()
                .map(|r| {
                    (
                        r["node"].as_str().unwrap_or("").to_string(),
                        r["state"].as_str().unwrap_or("").to_string(),
                        r["error"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The nodes where `model` is ready.
pub fn ready(user: &User, node: &str, model: &str) -> Vec<String> {
    replicas(user, node, model)
        .into_iter()
        .filter(|(_, s, _)| s == "ready")
        .map(|(n, _, _)| n)
        .collect()
}

/// Wait until `cond` holds (see [`crate::wait_until`]).
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) -> Duration {
    crate::wait_until(what, timeout, cond)
}
