//! The S3 gateway driven by real clients (boto3 and the aws CLI, installed from PyPI by
//! `scripts/s3-clients.sh`) against a `weft up` fabric: every operation the gateway offers,
//! a multipart round trip of `WEFT_BIG_MIB` (default 1024) MiB, signatures and scopes.

use std::path::{Path, PathBuf};
use std::process::Command;

use weft_cluster::cli::{User, up};

fn field(text: &str, name: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"))
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn real_s3_clients_work_against_the_gateway() {
    let venv = Command::new(repo().join("scripts/s3-clients.sh"))
        .output()
        .expect("scripts/s3-clients.sh runs");
    assert!(
        venv.status.success(),
        "installing boto3 and the aws CLI failed: {}",
        String::from_utf8_lossy(&venv.stderr)
    );
    let bin = PathBuf::from(String::from_utf8_lossy(&venv.stdout).trim());

    let fabric = up(&["--nodes", "6", "--no-wan"]);
    let dir = fabric.root().to_str().unwrap().to_string();
    let node = format!("{dir}/node2");
    // The user's own config dir (their account), not the machine's.
    let (user, _) = User::with_account();
    let weft = |args: &[&str]| user.ok(args);
    let rw = weft(&["--data", &node, "key", "create"]);
    let ro = weft(&[
        "--data", &node, "key", "create", "--bucket", "photos", "--read",
    ]);
    let made_on = field(&rw, "endpoint");
    assert!(made_on.starts_with("http://127.0.0.1:"), "{rw}");
    // Keys belong to the account, not the node: the clients use another node's gateway.
    let addr = std::fs::read_to_string(format!("{dir}/node5/{}", "s3.addr")).unwrap();
    let endpoint = format!("http://{}", addr.trim());
    assert_ne!(endpoint, made_on);
    let listed = weft(&["--data", &node, "key", "ls"]);
    assert!(listed.contains(&field(&ro, "access key")) && listed.contains("read on bucket photos"));

    let work = tempfile::tempdir().unwrap();
    let out = Command::new(bin.join("python"))
        .arg(repo().join("crates/weft/tests/s3/clients.py"))
        .env("WEFT_S3", &endpoint)
        .env("WEFT_KEY", field(&rw, "access key"))
        .env("WEFT_SECRET", field(&rw, "secret key"))
        .env("WEFT_RO_KEY", field(&ro, "access key"))
        .env("WEFT_RO_SECRET", field(&ro, "secret key"))
        .env("WORK", work.path())
        .env(
            "WEFT_BIG_MIB",
            std::env::var("WEFT_BIG_MIB").unwrap_or_else(|_| "1024".into()),
        )
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "S3 client checks failed:\n{log}");
    println!("{log}");

    // A deleted key stops working at once.
    let id = field(&ro, "access key");
    weft(&["--data", &node, "key", "rm", &id]);
    assert!(!weft(&["--data", &node, "key", "ls"]).contains(&id));
}
