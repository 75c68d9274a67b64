//! The real `weft` binary, several processes on loopback, driven as a user would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn weft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .env_remove("WEFT_DATA")
        .env("HOME", std::env::temp_dir())
        .stdin(Stdio::null())
        .output()
        .expect("weft runs")
}

fn ok(args: &[&str]) -> String {
    let out = weft(args);
    assert!(
        out.status.success(),
        "weft {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn fails(args: &[&str]) -> String {
    let out = weft(args);
    assert!(!out.status.success(), "weft {args:?} should have failed");
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn nodes(dir: &Path) -> Vec<Value> {
    let out = weft(&["--data", dir.to_str().unwrap(), "nodes", "--json"]);
    serde_json::from_slice::<Value>(&out.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

fn state_of(rows: &[Value], id: &str) -> Option<String> {
    rows.iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["state"].as_str().map(String::from))
}

fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) -> Duration {
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

/// A `weft up` fabric, stopped on drop.
struct Local {
    dir: tempfile::TempDir,
}

impl Local {
    fn up(extra: &[&str]) -> Local {
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

    fn node(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("node{n}"))
    }

    fn id(&self, n: usize) -> String {
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

#[test]
fn a_fabric_forms_notices_a_kill_and_takes_the_node_back() {
    let fabric = Local::up(&[
        "--sites",
        "eu:2,us:2,ap:1",
        "--wan",
        "eu-us=20ms,eu-ap=40ms,us-ap=30ms",
    ]);
    for n in 1..=5 {
        let rows = nodes(&fabric.node(n));
        assert_eq!(rows.len(), 5, "node{n} sees {rows:?}");
        assert!(rows.iter().all(|r| r["state"] == "alive"));
    }
    let victim = fabric.id(3);
    let pid: i32 = std::fs::read_to_string(fabric.node(3).join("node.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let took = wait_until(
        "every other node to mark the killed node dead",
        Duration::from_secs(15),
        || {
            [1, 2, 4, 5]
                .iter()
                .all(|&n| state_of(&nodes(&fabric.node(n)), &victim).as_deref() == Some("dead"))
        },
    );
    eprintln!("killed node marked dead everywhere after {took:?}");
    // `weft up` on an existing fabric restarts what is not running, with the same identity.
    ok(&[
        "up",
        "--dir",
        fabric.dir.path().to_str().unwrap(),
        "--quiet",
        "--timeout",
        "30",
    ]);
    assert_eq!(fabric.id(3), victim);
    wait_until(
        "the restarted node to be alive everywhere",
        Duration::from_secs(15),
        || (1..=5).all(|n| state_of(&nodes(&fabric.node(n)), &victim).as_deref() == Some("alive")),
    );
    // A graceful stop (SIGTERM, as `weft down` sends) is seen as a leave, not a death.
    let leaver = fabric.id(5);
    let pid: i32 = std::fs::read_to_string(fabric.node(5).join("node.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    wait_until(
        "the others to see node5 left",
        Duration::from_secs(10),
        || (1..=4).all(|n| state_of(&nodes(&fabric.node(n)), &leaver).as_deref() == Some("left")),
    );
    let table = ok(&["--data", fabric.node(1).to_str().unwrap(), "nodes"]);
    assert!(
        table.contains("SITE") && table.contains("alive") && table.contains("eu"),
        "{table}"
    );
}

fn spawn_run(dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["--data", dir.to_str().unwrap(), "run"])
        .env_remove("WEFT_DATA")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

struct Running(Child);
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn invites_are_signed_single_use_and_expire() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = tmp.path().join("admin");
    let a = admin.to_str().unwrap();
    ok(&[
        "--data",
        a,
        "init",
        "--site",
        "hq",
        "--region",
        "eu",
        "--listen",
        "127.0.0.1:0",
    ]);
    fails(&["--data", a, "init"]);
    let _node = Running(spawn_run(&admin));
    wait_until("admin node api", Duration::from_secs(20), || {
        admin.join("api.addr").exists()
    });
    let invite = ok(&[
        "--data",
        a,
        "invite",
        "--site",
        "lab",
        "--region",
        "eu",
        "--jurisdiction",
        "de",
        "--ttl",
        "1h",
    ]);
    let invite = invite.trim();
    assert!(invite.starts_with("weft1-"));

    let joiner = |name: &str, inv: &str| {
        weft(&[
            "--data",
            tmp.path().join(name).to_str().unwrap(),
            "join",
            inv,
            "--no-start",
            "--listen",
            "127.0.0.1:0",
        ])
    };
    let first = joiner("b", invite);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(String::from_utf8_lossy(&first.stdout).contains("\"lab\""));

    let reuse = joiner("c", invite);
    assert!(!reuse.status.success());
    assert!(
        String::from_utf8_lossy(&reuse.stderr).contains("already used"),
        "{}",
        String::from_utf8_lossy(&reuse.stderr)
    );

    let short = ok(&["--data", a, "invite", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    let expired = joiner("d", short.trim());
    assert!(
        String::from_utf8_lossy(&expired.stderr).contains("expired"),
        "{}",
        String::from_utf8_lossy(&expired.stderr)
    );

    // Tampering breaks the signature or the encoding; either way it is refused.
    let fresh = ok(&["--data", a, "invite"]);
    let fresh = fresh.trim();
    let mut tampered: Vec<char> = fresh.chars().collect();
    let mid = tampered.len() / 2;
    tampered[mid] = if tampered[mid] == 'A' { 'B' } else { 'A' };
    let tampered: String = tampered.into_iter().collect();
    let forged = joiner("e", &tampered);
    assert!(!forged.status.success());
    let garbage = joiner("f", "hello");
    assert!(String::from_utf8_lossy(&garbage.stderr).contains("not a weft invite"));

    // An invite of another fabric, aimed at this fabric's node: the joiner finds no member of
    // the invite's fabric there and refuses to hand over anything.
    let other = tmp.path().join("other");
    ok(&[
        "--data",
        other.to_str().unwrap(),
        "init",
        "--listen",
        "127.0.0.1:0",
    ]);
    let seed: [u8; 32] = std::fs::read(other.join("admin.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let other_admin = weft_core::SecretKey::from_seed(seed);
    let status: Value = serde_json::from_str(&ok(&["--data", a, "status", "--json"])).unwrap();
    let foreign = weft_core::Invite::issue(
        &other_admin,
        weft_core::InviteBody {
            fabric: weft_core::FabricId::from_admin_key(&other_admin.public()),
            admin: other_admin.public(),
            nonce: [7; 16],
            placement: weft_core::Placement::default(),
            roles: weft_core::Role::defaults(),
            expires_at: u64::MAX,
            bootstrap: vec![status["addr"].as_str().unwrap().parse().unwrap()],
        },
    );
    let refused = joiner("g", &foreign.to_text());
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("could not reach any node") && err.contains("fabric"),
        "{err}"
    );
}

#[test]
fn a_revoked_node_is_cut_off() {
    let fabric = Local::up(&["--nodes", "3", "--no-wan"]);
    let victim = fabric.id(3);
    let out = ok(&[
        "--data",
        fabric.node(1).to_str().unwrap(),
        "revoke",
        &victim[..10],
    ]);
    assert!(out.contains(&victim));
    wait_until(
        "node2 to know of the revocation",
        Duration::from_secs(10),
        || state_of(&nodes(&fabric.node(2)), &victim).as_deref() == Some("revoked"),
    );
    let others = [fabric.id(1), fabric.id(2)];
    wait_until(
        "the revoked node to lose every peer",
        Duration::from_secs(20),
        || {
            let rows = nodes(&fabric.node(3));
            others
                .iter()
                .all(|id| state_of(&rows, id).as_deref() == Some("dead"))
        },
    );
    // Only the admin node can revoke, and unknown ids are refused clearly.
    let err = fails(&[
        "--data",
        fabric.node(2).to_str().unwrap(),
        "revoke",
        &fabric.id(1)[..8],
    ]);
    assert!(err.contains("admin key"), "{err}");
    let err = fails(&[
        "--data",
        fabric.node(1).to_str().unwrap(),
        "revoke",
        "ffffffffffff0000",
    ]);
    assert!(err.contains("no known node"), "{err}");
}

#[test]
fn operator_errors_are_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("n");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("node.toml"), "listen = \"here\"\n").unwrap();
    let err = fails(&["--data", d.to_str().unwrap(), "run"]);
    assert!(err.contains("not an address"), "{err}");
    std::fs::write(d.join("node.toml"), "").unwrap();
    let err = fails(&["--data", d.to_str().unwrap(), "run"]);
    assert!(
        err.contains("weft init") && err.contains("weft join"),
        "{err}"
    );
    let err = fails(&["--data", d.to_str().unwrap(), "status"]);
    assert!(err.contains("no running node"), "{err}");
    let err = fails(&[
        "up",
        "--dir",
        tmp.path().join("x").to_str().unwrap(),
        "--nodes",
        "3",
        "--sites",
        "eu:1",
    ]);
    assert!(err.contains("disagrees"), "{err}");
    let err = fails(&[
        "up",
        "--dir",
        tmp.path().join("y").to_str().unwrap(),
        "--wan",
        "eu-us",
    ]);
    assert!(err.contains("--wan"), "{err}");
}

#[test]
fn the_api_refuses_requests_without_the_token() {
    let fabric = Local::up(&["--nodes", "1", "--no-wan"]);
    let addr = std::fs::read_to_string(fabric.node(1).join("api.addr")).unwrap();
    let client = weft_api::ApiClient::new(addr.trim(), "wrong-token");
    match client.get::<Value>("/v1/status") {
        Err(weft_api::ApiError::Refused { status, .. }) => assert_eq!(status, 401),
        other => panic!("expected 401, got {other:?}"),
    }
    let token = std::fs::read_to_string(fabric.node(1).join("api.token")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(fabric.node(1).join("api.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let key_mode = std::fs::metadata(fabric.node(1).join("node.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);
    assert!(
        weft_api::ApiClient::new(addr.trim(), &token)
            .get::<Value>("/v1/status")
            .is_ok()
    );
}

#[test]
fn files_round_trip_through_the_cli_between_nodes() {
    let fabric = Local::up(&[
        "--sites",
        "eu:3,us:2,ap:1",
        "--wan",
        "eu-us=5ms,eu-ap=10ms,us-ap=8ms",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.bin");
    let bytes: Vec<u8> = (0..(9 << 20) + 777)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&input, &bytes).unwrap();
    let n1 = fabric.node(1);
    let cap = ok(&[
        "--data",
        n1.to_str().unwrap(),
        "put",
        input.to_str().unwrap(),
    ]);
    let cap = cap.trim();
    assert!(cap.starts_with("weft-cap1-"), "{cap}");
    let output = tmp.path().join("out.bin");
    let n6 = fabric.node(6);
    ok(&[
        "--data",
        n6.to_str().unwrap(),
        "get",
        cap,
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(
        std::fs::read(&output).unwrap() == bytes,
        "bytes differ after the round trip"
    );
    let stat = ok(&["--data", n6.to_str().unwrap(), "stat", cap]);
    assert!(
        stat.contains("4+2") && stat.contains("segment    2"),
        "{stat}"
    );
    // Residency through the CLI: only eu nodes; an impossible policy is refused with a reason.
    let eu = ok(&[
        "--data",
        n1.to_str().unwrap(),
        "put",
        input.to_str().unwrap(),
        "--regions",
        "eu",
    ]);
    let manifest: Value = serde_json::from_str(&ok(&[
        "--data",
        n6.to_str().unwrap(),
        "stat",
        eu.trim(),
        "--json",
    ]))
    .unwrap();
    let eu_ids: Vec<String> = (1..=3).map(|n| fabric.id(n)).collect();
    for seg in manifest["segments"].as_array().unwrap() {
        for h in seg["holders"].as_array().unwrap() {
            let hex: String = h
                .as_array()
                .unwrap()
                .iter()
                .map(|b| format!("{:02x}", b.as_u64().unwrap()))
                .collect();
            assert!(eu_ids.contains(&hex), "shard outside eu: {hex}");
        }
    }
    let err = fails(&[
        "--data",
        n1.to_str().unwrap(),
        "put",
        input.to_str().unwrap(),
        "--regions",
        "ap",
        "--ec",
        "2+1",
    ]);
    assert!(err.contains("residency"), "{err}");
    let err = fails(&["--data", n1.to_str().unwrap(), "get", "weft-cap1-AAAA"]);
    assert!(err.contains("capability"), "{err}");
    assert!(!tmp.path().join("missing.weft-partial").exists());
}

#[test]
fn buckets_name_objects_and_keep_them_private_to_their_owner() {
    let fabric = Local::up(&["--nodes", "4", "--no-wan"]);
    let (n1, n3) = (fabric.node(1), fabric.node(3));
    let (n1, n3) = (n1.to_str().unwrap(), n3.to_str().unwrap());
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("doc.bin");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&input, &bytes).unwrap();
    ok(&["--data", n1, "bucket", "create", "docs"]);
    assert!(fails(&["--data", n1, "bucket", "create", "docs"]).contains("already exists"));
    assert!(fails(&["--data", n1, "bucket", "create", "No"]).contains("bucket name"));
    ok(&[
        "--data",
        n1,
        "put",
        input.to_str().unwrap(),
        "docs/reports/q3 final.bin",
    ]);
    let listing = ok(&["--data", n3, "ls", "docs/reports"]);
    assert!(
        listing.contains("reports/q3 final.bin") && listing.contains("3000000"),
        "{listing}"
    );
    assert!(ok(&["--data", n3, "ls"]).contains("docs"));
    // Another node's account cannot read it by name…
    let out = tmp.path().join("out.bin");
    let err = fails(&[
        "--data",
        n3,
        "get",
        "docs/reports/q3 final.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("another account"), "{err}");
    // …but can with a capability the owner shares.
    let cap = ok(&["--data", n1, "share", "docs/reports/q3 final.bin"]);
    ok(&["--data", n3, "get", cap.trim(), "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    ok(&[
        "--data",
        n1,
        "get",
        "docs/reports/q3 final.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    ok(&["--data", n1, "rm", "docs/reports/q3 final.bin"]);
    assert!(!ok(&["--data", n1, "ls", "docs"]).contains("q3"));
    assert!(fails(&["--data", n1, "get", "docs/reports/q3 final.bin"]).contains("no object"));
    assert!(
        fails(&["--data", n1, "put", input.to_str().unwrap(), "nobucket/x"]).contains("no bucket")
    );
    // A bucket that keeps versions: the old bytes stay readable by version id.
    ok(&["--data", n1, "bucket", "create", "hist", "--versions", "3"]);
    let (v1, v2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    std::fs::write(&v1, b"first").unwrap();
    std::fs::write(&v2, b"second").unwrap();
    ok(&["--data", n1, "put", v1.to_str().unwrap(), "hist/k"]);
    ok(&["--data", n1, "put", v2.to_str().unwrap(), "hist/k"]);
    let versions = ok(&["--data", n1, "ls", "--versions", "hist/k"]);
    let ids: Vec<&str> = versions
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2, "{versions}");
    assert_eq!(ok(&["--data", n1, "get", "hist/k"]), "second");
    assert_eq!(
        ok(&["--data", n1, "get", "hist/k", "--version-id", ids[1]]),
        "first"
    );
    assert!(fails(&["--data", n1, "get", "hist/k", "--version-id", "nope"]).contains("no version"));
    assert!(fails(&["--data", n1, "bucket", "rm", "hist"]).contains("not empty"));
    ok(&["--data", n1, "rm", "hist/k"]);
    ok(&["--data", n1, "bucket", "rm", "hist"]);
}
