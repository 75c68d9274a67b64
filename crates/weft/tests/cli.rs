//! The real `weft` binary, several processes on loopback, driven as a user would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use weft_cluster::cli::*;

#[test]
fn a_fabric_forms_notices_a_kill_and_takes_the_node_back() {
    let fabric = up(&[
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
    let victim = id(&fabric.node(3));
    signal(&fabric.node(3), "-9");
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
        fabric.root().to_str().unwrap(),
        "--quiet",
        "--timeout",
        "30",
    ]);
    assert_eq!(id(&fabric.node(3)), victim);
    wait_until(
        "the restarted node to be alive everywhere",
        Duration::from_secs(15),
        || (1..=5).all(|n| state_of(&nodes(&fabric.node(n)), &victim).as_deref() == Some("alive")),
    );
    // A graceful stop (SIGTERM, as `weft down` sends) is seen as a leave, not a death.
    let leaver = id(&fabric.node(5));
    signal(&fabric.node(5), "-TERM");
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
    Command::new(weft_cluster::process::binary())
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
    let fabric = up(&["--nodes", "3", "--no-wan"]);
    let victim = id(&fabric.node(3));
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
    // The revoked node is told (a peer that refuses it hands it the signed revocation), stops,
    // and says why.
    let pid: i32 = std::fs::read_to_string(fabric.node(3).join("node.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let took = wait_until("the revoked node to stop", Duration::from_secs(20), || {
        !Path::new(&format!("/proc/{pid}")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| s.contains(") Z "))
    });
    eprintln!("the revoked node stopped {took:?} after the revocation spread");
    let log = std::fs::read_to_string(fabric.node(3).join("node.log")).unwrap();
    assert!(
        log.contains("membership was revoked by the fabric admin"),
        "{log}"
    );
    assert!(
        fails(&["--data", fabric.node(3).to_str().unwrap(), "status"]).contains("no running node")
    );
    // Only the admin node can revoke, and unknown ids are refused clearly.
    let err = fails(&[
        "--data",
        fabric.node(2).to_str().unwrap(),
        "revoke",
        &id(&fabric.node(1))[..8],
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
    let fabric = up(&["--nodes", "1", "--no-wan"]);
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
    let fabric = up(&[
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
    let (alice, _) = User::with_account();
    let cap = alice.ok(&[
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
    let eu = alice.ok(&[
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
    let eu_ids: Vec<String> = (1..=3).map(|n| id(&fabric.node(n))).collect();
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
    let err = alice.fails(&[
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
    let fabric = up(&["--nodes", "4", "--no-wan"]);
    let (n1, n3) = (fabric.node(1), fabric.node(3));
    let (n1, n3) = (n1.to_str().unwrap(), n3.to_str().unwrap());
    let (alice, _) = User::with_account();
    let (bob, _) = User::with_account();
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("doc.bin");
    let bytes: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&input, &bytes).unwrap();
    // Without an account, data commands say how to get one.
    assert!(fails(&["--data", n1, "bucket", "create", "docs"]).contains("weft account create"));
    alice.ok(&["--data", n1, "bucket", "create", "docs"]);
    assert!(
        alice
            .fails(&["--data", n1, "bucket", "create", "docs"])
            .contains("already exists")
    );
    assert!(
        bob.fails(&["--data", n3, "bucket", "create", "docs"])
            .contains("already exists")
    );
    assert!(
        alice
            .fails(&["--data", n1, "bucket", "create", "No"])
            .contains("bucket name")
    );
    alice.ok(&[
        "--data",
        n1,
        "put",
        input.to_str().unwrap(),
        "docs/reports/q3 final.bin",
    ]);
    // The account, not the node, owns the bucket: it works the same through another node.
    let listing = alice.ok(&["--data", n3, "ls", "docs/reports"]);
    assert!(
        listing.contains("reports/q3 final.bin") && listing.contains("3000000"),
        "{listing}"
    );
    assert!(bob.ok(&["--data", n3, "ls"]).contains("docs"));
    // Another account cannot read it by name…
    let out = tmp.path().join("out.bin");
    let err = bob.fails(&[
        "--data",
        n3,
        "get",
        "docs/reports/q3 final.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(err.contains("another account"), "{err}");
    assert!(
        bob.fails(&["--data", n1, "rm", "docs/reports/q3 final.bin"])
            .contains("another account")
    );
    // …but can with a capability the owner shares (and a capability needs no account).
    let cap = alice.ok(&["--data", n1, "share", "docs/reports/q3 final.bin"]);
    ok(&["--data", n3, "get", cap.trim(), "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    alice.ok(&[
        "--data",
        n3,
        "get",
        "docs/reports/q3 final.bin",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    alice.ok(&["--data", n1, "rm", "docs/reports/q3 final.bin"]);
    assert!(!alice.ok(&["--data", n1, "ls", "docs"]).contains("q3"));
    assert!(
        alice
            .fails(&["--data", n1, "get", "docs/reports/q3 final.bin"])
            .contains("no object")
    );
    assert!(
        alice
            .fails(&["--data", n1, "put", input.to_str().unwrap(), "nobucket/x"])
            .contains("no bucket")
    );
    // A bucket that keeps versions: the old bytes stay readable by version id.
    alice.ok(&["--data", n1, "bucket", "create", "hist", "--versions", "3"]);
    let (v1, v2) = (tmp.path().join("v1"), tmp.path().join("v2"));
    std::fs::write(&v1, b"first").unwrap();
    std::fs::write(&v2, b"second").unwrap();
    alice.ok(&["--data", n1, "put", v1.to_str().unwrap(), "hist/k"]);
    alice.ok(&["--data", n3, "put", v2.to_str().unwrap(), "hist/k"]);
    let versions = alice.ok(&["--data", n1, "ls", "--versions", "hist/k"]);
    let ids: Vec<&str> = versions
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids.len(), 2, "{versions}");
    assert_eq!(alice.ok(&["--data", n1, "get", "hist/k"]), "second");
    assert_eq!(
        alice.ok(&["--data", n1, "get", "hist/k", "--version-id", ids[1]]),
        "first"
    );
    assert!(
        alice
            .fails(&["--data", n1, "get", "hist/k", "--version-id", "nope"])
            .contains("no version")
    );
    assert!(
        alice
            .fails(&["--data", n1, "bucket", "rm", "hist"])
            .contains("not empty")
    );
    assert!(
        bob.fails(&["--data", n1, "bucket", "rm", "hist"])
            .contains("another account")
    );
    alice.ok(&["--data", n1, "rm", "hist/k"]);
    alice.ok(&["--data", n1, "bucket", "rm", "hist"]);
}

#[test]
fn an_account_outlives_the_disk_of_the_node_it_wrote_through() {
    an_account_outlives_a_lost_disk(1);
}

#[test]
fn an_account_outlives_the_disk_of_another_node() {
    an_account_outlives_a_lost_disk(3);
}

/// Write through node1's CLI and S3 gateway, lose node `victim`'s disk, read everything back
/// through every other node's CLI and gateway, then from the recovery phrase alone.
fn an_account_outlives_a_lost_disk(victim: usize) {
    let fabric = up(&["--nodes", "5", "--no-wan"]);
    let (alice, phrase) = User::with_account();
    let shown = alice.ok(&["account", "show", "--json"]);
    let id = serde_json::from_str::<Value>(&shown).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The account lives in the user's config, in no node's data dir.
    for n in 1..=5 {
        let dir = fabric.node(n);
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_file() {
                let bytes = std::fs::read(entry.path()).unwrap();
                let seed = std::fs::read(alice.config.path().join("accounts/default.key")).unwrap();
                assert!(
                    !bytes.windows(32).any(|w| w == seed.as_slice()),
                    "the account key is in {}",
                    entry.path().display()
                );
            }
        }
    }
    let n1 = fabric.node(1);
    let n1 = n1.to_str().unwrap();
    alice.ok(&["--data", n1, "bucket", "create", "keep"]);
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, size) in [0usize, 1, 70_000, 5_000_000].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..size).map(|j| (j * 31 + i * 7) as u8).collect();
        let path = tmp.path().join(format!("f{i}"));
        std::fs::write(&path, &bytes).unwrap();
        alice.ok(&[
            "--data",
            n1,
            "put",
            path.to_str().unwrap(),
            &format!("keep/d/f{i}"),
        ]);
        files.push((format!("keep/d/f{i}"), bytes));
    }
    let key = alice.ok(&["--data", n1, "key", "create"]);
    let s3 = S3::new(&fabric.node(1), &key);
    let mut through_s3 = Vec::new();
    for (i, size) in [3usize, 300_000].into_iter().enumerate() {
        let bytes: Vec<u8> = (0..size).map(|j| (j * 17 + i) as u8).collect();
        assert_eq!(s3.put("keep", &format!("s3/o{i}"), &bytes), 200);
        through_s3.push((format!("s3/o{i}"), bytes));
    }
    // A node's disk is lost.
    let pid = signal(&fabric.node(victim), "-9");
    wait_until("the node to exit", Duration::from_secs(10), || {
        !Path::new(&format!("/proc/{pid}")).exists()
    });
    std::fs::remove_dir_all(fabric.node(victim)).unwrap();
    let check = |user: &User, via: &[&str]| {
        for (target, bytes) in &files {
            let out = tmp.path().join("out");
            let mut args = via.to_vec();
            args.extend_from_slice(&["get", target, "-o", out.to_str().unwrap()]);
            user.ok(&args);
            assert!(
                std::fs::read(&out).unwrap() == *bytes,
                "{target} differs through {via:?}"
            );
        }
    };
    let others: Vec<usize> = (1..=5).filter(|&n| n != victim).collect();
    for &n in &others {
        let dir = fabric.node(n);
        check(&alice, &["--data", dir.to_str().unwrap()]);
        let s3 = S3::new(&dir, &key);
        for (k, bytes) in through_s3.iter().chain(files.iter()) {
            let k = k.strip_prefix("keep/").unwrap_or(k);
            assert_eq!(
                s3.get("keep", k),
                (200, bytes.clone()),
                "{k} through node{n}'s S3"
            );
        }
        let out = tmp.path().join("o1");
        alice.ok(&[
            "--data",
            dir.to_str().unwrap(),
            "get",
            "keep/s3/o1",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert!(
            std::fs::read(&out).unwrap() == through_s3[1].1,
            "keep/s3/o1 through node{n}'s CLI"
        );
    }
    // Any node will do, named by id and QUIC address (`--node ID@ADDR`), as from another
    // machine: encrypted, and only that node answers.
    let status: Value = serde_json::from_str(&ok(&[
        "--data",
        fabric.node(others[2]).to_str().unwrap(),
        "status",
        "--json",
    ]))
    .unwrap();
    let remote = format!(
        "{}@{}",
        status["id"].as_str().unwrap(),
        status["addr"].as_str().unwrap()
    );
    check(&alice, &["--node", &remote]);
    let listing = alice.ok(&["--node", &remote, "ls", "keep/d"]);
    assert_eq!(listing.lines().count(), 4, "{listing}");
    let impostor = format!("{}@{}", "ab".repeat(32), status["addr"].as_str().unwrap());
    let err = alice.fails(&["--node", &impostor, "ls", "keep/d"]);
    assert!(err.contains("cannot reach node"), "{err}");
    assert!(
        alice
            .fails(&["--node", "nope@1.2.3.4:5", "ls"])
            .contains("full id")
    );
    // The phrase alone brings the account back on a machine that never had it.
    let elsewhere = User {
        config: tempfile::tempdir().unwrap(),
    };
    assert!(
        elsewhere
            .fails(&["account", "recover", "--phrase", "not a phrase"])
            .contains("recovery phrase")
    );
    let out = elsewhere.ok(&["account", "recover", "--phrase", &phrase]);
    assert!(out.contains(&id), "{out}");
    assert!(
        elsewhere
            .fails(&["account", "create"])
            .contains("exists already")
    );
    let dir = fabric.node(others[1]);
    check(&elsewhere, &["--data", dir.to_str().unwrap()]);
}

/// S3 requests signed with one access key against one node's gateway (presigned URLs).
struct S3 {
    endpoint: String,
    creds: rusty_s3::Credentials,
}

impl S3 {
    fn new(node: &Path, key_output: &str) -> S3 {
        let field = |name: &str| {
            key_output
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("no {name} in {key_output}"))
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        let addr = std::fs::read_to_string(node.join("s3.addr")).unwrap();
        S3 {
            endpoint: format!("http://{}", addr.trim()),
            creds: rusty_s3::Credentials::new(field("access key"), field("secret key")),
        }
    }

    fn bucket(&self, name: &str) -> rusty_s3::Bucket {
        rusty_s3::Bucket::new(
            self.endpoint.parse().unwrap(),
            rusty_s3::UrlStyle::Path,
            name.to_string(),
            "us-east-1",
        )
        .unwrap()
    }

    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into()
    }

    /// PUT `bytes` as `bucket/key`; the status.
    fn put(&self, bucket: &str, key: &str, bytes: &[u8]) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .put_object(Some(&self.creds), key)
            .sign(Duration::from_secs(60));
        Self::agent()
            .put(url.as_str())
            .send(bytes)
            .unwrap()
            .status()
            .as_u16()
    }

    /// GET `bucket/key`: status and body.
    fn get(&self, bucket: &str, key: &str) -> (u16, Vec<u8>) {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .get_object(Some(&self.creds), key)
            .sign(Duration::from_secs(60));
        let mut resp = Self::agent().get(url.as_str()).call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_vec().unwrap_or_default())
    }

    /// List `bucket`: status and body (XML).
    fn list(&self, bucket: &str) -> (u16, String) {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .list_objects_v2(Some(&self.creds))
            .sign(Duration::from_secs(60));
        let mut resp = Self::agent().get(url.as_str()).call().unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// Send a signed URL: the status and body.
    fn send(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let agent = Self::agent();
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let mut resp = agent.run(req.body(body.to_vec()).unwrap()).unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    /// PUT `bytes` as `bucket/key` with `headers`: the status and the ETag answered.
    fn put_with(
        &self,
        bucket: &str,
        key: &str,
        bytes: &[u8],
        headers: &[(&str, &str)],
    ) -> (u16, String) {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .put_object(Some(&self.creds), key)
            .sign(Duration::from_secs(60));
        Self::send_etag("PUT", url.as_str(), headers, bytes)
    }

    /// UploadPart: the status and the part's ETag.
    fn upload_part(
        &self,
        bucket: &str,
        key: &str,
        upload: &str,
        n: u16,
        bytes: &[u8],
    ) -> (u16, String) {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .upload_part(Some(&self.creds), key, n, upload)
            .sign(Duration::from_secs(60));
        Self::send_etag("PUT", url.as_str(), &[], bytes)
    }

    /// CompleteMultipartUpload of parts 1.. with `etags`; the status.
    fn complete(&self, bucket: &str, key: &str, upload: &str, etags: &[&str]) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .complete_multipart_upload(Some(&self.creds), key, upload, etags.iter().copied())
            .sign(Duration::from_secs(60));
        let parts: String = etags
            .iter()
            .enumerate()
            .map(|(i, t)| {
                format!(
                    "<Part><PartNumber>{}</PartNumber><ETag>{t}</ETag></Part>",
                    i + 1
                )
            })
            .collect();
        let body = format!("<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>");
        Self::send("POST", url.as_str(), &[], body.as_bytes()).0
    }

    /// Send a signed URL: the status and the ETag answered.
    fn send_etag(method: &str, url: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
        let mut req = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = Self::agent().run(req.body(body.to_vec()).unwrap()).unwrap();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (resp.status().as_u16(), etag)
    }

    /// HEAD `bucket/key`: the status and every header answered, one `name: value` a line.
    fn head_headers(&self, bucket: &str, key: &str) -> (u16, String) {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .head_object(Some(&self.creds), key)
            .sign(Duration::from_secs(60));
        let req = ureq::http::Request::builder()
            .method("HEAD")
            .uri(url.as_str());
        let resp = Self::agent().run(req.body(Vec::new()).unwrap()).unwrap();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or_default()))
            .collect();
        (resp.status().as_u16(), headers)
    }

    /// HEAD `bucket/key`; the status.
    fn head(&self, bucket: &str, key: &str) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .head_object(Some(&self.creds), key)
            .sign(Duration::from_secs(60));
        Self::send("HEAD", url.as_str(), &[], b"").0
    }

    /// CopyObject `from` (`bucket/key`) to `bucket/key`; the status.
    fn copy(&self, from: &str, bucket: &str, key: &str) -> u16 {
        use rusty_s3::S3Action;
        let b = self.bucket(bucket);
        let source = format!("/{from}");
        let mut action = b.put_object(Some(&self.creds), key);
        action
            .headers_mut()
            .insert("x-amz-copy-source", source.clone());
        let url = action.sign(Duration::from_secs(60));
        Self::send("PUT", url.as_str(), &[("x-amz-copy-source", &source)], b"").0
    }

    /// CreateMultipartUpload: status and upload id.
    fn create_upload(&self, bucket: &str, key: &str) -> (u16, String) {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .create_multipart_upload(Some(&self.creds), key)
            .sign(Duration::from_secs(60));
        let (status, body) = Self::send("POST", url.as_str(), &[], b"");
        let id = rusty_s3::actions::CreateMultipartUpload::parse_response(&body)
            .map(|r| r.upload_id().to_string())
            .unwrap_or_default();
        (status, id)
    }

    /// UploadPart, ListParts, CompleteMultipartUpload and AbortMultipartUpload of `upload`:
    /// their statuses.
    fn multipart_ops(&self, bucket: &str, key: &str, upload: &str) -> [u16; 4] {
        use rusty_s3::S3Action;
        let b = self.bucket(bucket);
        let part = b
            .upload_part(Some(&self.creds), key, 1, upload)
            .sign(Duration::from_secs(60));
        let parts = b
            .list_parts(Some(&self.creds), key, upload)
            .sign(Duration::from_secs(60));
        let complete = b
            .complete_multipart_upload(Some(&self.creds), key, upload, ["\"x\""].into_iter())
            .sign(Duration::from_secs(60));
        let abort = b
            .abort_multipart_upload(Some(&self.creds), key, upload)
            .sign(Duration::from_secs(60));
        let body = "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"x\"</ETag></Part></CompleteMultipartUpload>";
        [
            Self::send("PUT", part.as_str(), &[], b"part").0,
            Self::send("GET", parts.as_str(), &[], b"").0,
            Self::send("POST", complete.as_str(), &[], body.as_bytes()).0,
            Self::send("DELETE", abort.as_str(), &[], b"").0,
        ]
    }

    /// ListMultipartUploads of `bucket`: status and body (XML).
    fn list_uploads(&self, bucket: &str) -> (u16, String) {
        use rusty_s3::S3Action;
        let b = self.bucket(bucket);
        let mut action = b.list_objects_v2(Some(&self.creds));
        action.query_mut().insert("uploads", "");
        let url = action.sign(Duration::from_secs(60));
        Self::send("GET", url.as_str(), &[], b"")
    }

    /// DELETE `bucket/key`; the status.
    fn delete(&self, bucket: &str, key: &str) -> u16 {
        use rusty_s3::S3Action;
        let url = self
            .bucket(bucket)
            .delete_object(Some(&self.creds), key)
            .sign(Duration::from_secs(60));
        Self::agent()
            .delete(url.as_str())
            .call()
            .unwrap()
            .status()
            .as_u16()
    }
}

#[test]
fn access_keys_work_through_every_node_within_their_scope() {
    let fabric = up(&["--nodes", "4", "--no-wan"]);
    let (alice, _) = User::with_account();
    let n1 = fabric.node(1);
    let n1 = n1.to_str().unwrap();
    alice.ok(&["--data", n1, "bucket", "create", "pics"]);
    alice.ok(&["--data", n1, "bucket", "create", "other"]);
    let rw = alice.ok(&["--data", n1, "key", "create"]);
    let ro = alice.ok(&["--data", n1, "key", "create", "--bucket", "pics", "--read"]);
    let scoped = alice.ok(&["--data", n1, "key", "create", "--bucket", "pics"]);
    let listed = alice.ok(&["--data", fabric.node(3).to_str().unwrap(), "key", "ls"]);
    assert_eq!(listed.lines().count(), 3, "{listed}");
    assert!(listed.contains("read on bucket pics"), "{listed}");
    let (bob, _) = User::with_account();
    assert_eq!(
        bob.ok(&["--data", n1, "key", "ls"]).trim(),
        "",
        "another account's keys are not listed"
    );
    for n in 1..=4 {
        let node = fabric.node(n);
        let (rw, ro, scoped) = (
            S3::new(&node, &rw),
            S3::new(&node, &ro),
            S3::new(&node, &scoped),
        );
        let key = format!("n{n}/photo.jpg");
        let body = format!("through node{n}").into_bytes();
        assert_eq!(rw.put("pics", &key, &body), 200, "node{n}");
        assert_eq!(rw.get("pics", &key), (200, body.clone()), "node{n}");
        let (status, xml) = rw.list("pics");
        assert!(
            status == 200 && xml.contains(&key),
            "node{n}: {status} {xml}"
        );
        assert_eq!(ro.get("pics", &key), (200, body.clone()), "node{n}");
        assert_eq!(
            ro.put("pics", &key, b"x"),
            403,
            "read-only key writes on node{n}"
        );
        assert_eq!(
            ro.delete("pics", &key),
            403,
            "read-only key deletes on node{n}"
        );
        assert_eq!(
            ro.list("other").0,
            403,
            "bucket-scoped key lists another bucket on node{n}"
        );
        assert_eq!(
            scoped.put("pics", &format!("{key}.s"), b"s"),
            200,
            "node{n}"
        );
        assert_eq!(scoped.put("other", &key, b"s"), 403, "node{n}");
        assert_eq!(scoped.get("other", &key).0, 403, "node{n}");
        assert_eq!(rw.put("other", &key, b"o"), 200, "node{n}");
        assert_eq!(rw.delete("pics", &format!("{key}.s")), 204, "node{n}");
        assert_eq!(rw.delete("other", &key), 204, "node{n}");
    }
    // The objects are the account's, whichever way they came in.
    let listing = alice.ok(&["--data", fabric.node(2).to_str().unwrap(), "ls", "pics"]);
    assert_eq!(listing.lines().count(), 4, "{listing}");
    // A removed key is refused on every node within seconds.
    let ro_id = ro
        .lines()
        .find_map(|l| l.strip_prefix("access key"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        bob.fails(&["--data", n1, "key", "rm", &ro_id])
            .contains("no access key")
    );
    alice.ok(&[
        "--data",
        fabric.node(4).to_str().unwrap(),
        "key",
        "rm",
        &ro_id,
    ]);
    let took = wait_until(
        "every node to refuse the removed key",
        Duration::from_secs(10),
        || (1..=4).all(|n| S3::new(&fabric.node(n), &ro).get("pics", "n1/photo.jpg").0 == 403),
    );
    eprintln!("removed key refused everywhere after {took:?}");
    assert_eq!(
        S3::new(&fabric.node(2), &rw).get("pics", "n1/photo.jpg").0,
        200,
        "other keys keep working"
    );
}

#[test]
fn another_account_is_refused_everything_on_every_node() {
    let fabric = up(&["--nodes", "3", "--no-wan"]);
    let (alice, _) = User::with_account();
    let (bob, _) = User::with_account();
    let n1 = fabric.node(1);
    let n1 = n1.to_str().unwrap();
    alice.ok(&["--data", n1, "bucket", "create", "pics"]);
    bob.ok(&["--data", n1, "bucket", "create", "mine"]);
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("f");
    std::fs::write(&file, b"alice's").unwrap();
    alice.ok(&["--data", n1, "put", file.to_str().unwrap(), "pics/k"]);
    bob.ok(&["--data", n1, "put", file.to_str().unwrap(), "mine/x"]);
    let alice_key = alice.ok(&["--data", n1, "key", "create"]);
    let bob_key = bob.ok(&["--data", n1, "key", "create"]);
    let (status, upload) = S3::new(&fabric.node(1), &alice_key).create_upload("pics", "big");
    assert_eq!(status, 200);
    for n in 1..=3 {
        let node = fabric.node(n);
        let dir = node.to_str().unwrap();
        // The CLI: every data command on alice's bucket, as bob, through this node.
        for args in [
            vec!["ls", "pics"],
            vec!["get", "pics/k"],
            vec!["stat", "pics/k"],
            vec!["share", "pics/k"],
            vec!["put", file.to_str().unwrap(), "pics/k"],
            vec!["rm", "pics/k"],
            vec!["ls", "--versions", "pics/k"],
            vec!["bucket", "rm", "pics"],
        ] {
            let mut all = vec!["--data", dir];
            all.extend(args.iter().copied());
            let err = bob.fails(&all);
            assert!(err.contains("another account"), "node{n} {args:?}: {err}");
        }
        // S3, with bob's own valid key.
        let s3 = S3::new(&node, &bob_key);
        assert_eq!(s3.list("pics").0, 403, "ListObjects on node{n}");
        assert_eq!(s3.head("pics", "k"), 403, "HeadObject on node{n}");
        let (status, body) = s3.get("pics", "k");
        assert_eq!(status, 403, "GetObject on node{n}");
        assert!(!String::from_utf8_lossy(&body).contains("alice's"));
        assert_eq!(s3.put("pics", "k", b"bob's"), 403, "PutObject on node{n}");
        assert_eq!(s3.delete("pics", "k"), 403, "DeleteObject on node{n}");
        assert_eq!(
            s3.copy("pics/k", "mine", "stolen"),
            403,
            "copy from on node{n}"
        );
        assert_eq!(
            s3.copy("mine/x", "pics", "planted"),
            403,
            "copy into on node{n}"
        );
        assert_eq!(
            s3.create_upload("pics", "b").0,
            403,
            "CreateMultipartUpload on node{n}"
        );
        assert_eq!(
            s3.multipart_ops("pics", "big", &upload),
            [403; 4],
            "UploadPart, ListParts, Complete, Abort on node{n}"
        );
        let (status, body) = s3.list_uploads("pics");
        assert_eq!(status, 403, "ListMultipartUploads on node{n}: {body}");
        // Alice's key lists the upload there (the same request is a real ListMultipartUploads).
        let (status, body) = S3::new(&node, &alice_key).list_uploads("pics");
        assert!(status == 200 && body.contains(&upload), "{status} {body}");
        // Alice's own key works there.
        assert_eq!(
            S3::new(&node, &alice_key).get("pics", "k"),
            (200, b"alice's".to_vec())
        );
    }
    assert_eq!(alice.ok(&["--data", n1, "get", "pics/k"]), "alice's");
    let listing = alice.ok(&["--data", n1, "ls", "pics"]);
    assert!(!listing.contains("planted"), "{listing}");
}

#[test]
fn a_nodes_old_account_is_exported_and_used_from_anywhere() {
    let fabric = up(&["--nodes", "3", "--no-wan"]);
    let n1 = fabric.node(1);
    // Before accounts, the node's own account (its data dir's account.key) owned buckets; the
    // operator's token still acts as it.
    let addr = std::fs::read_to_string(n1.join("api.addr")).unwrap();
    let token = std::fs::read_to_string(n1.join("api.token")).unwrap();
    let node = weft_api::ApiClient::new(addr.trim(), token.trim());
    let _: Value = node
        .post(
            "/v1/buckets",
            &weft_api::CreateBucket {
                name: "legacy".into(),
                ..Default::default()
            },
        )
        .unwrap();
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let _: Value = node
        .upload_put("/v1/b/legacy/old.bin", &mut &bytes[..])
        .unwrap();
    // Its operator exports it (the phrase is shown), and uses it through another node.
    let operator = User {
        config: tempfile::tempdir().unwrap(),
    };
    let out = operator.ok(&["--data", n1.to_str().unwrap(), "account", "export"]);
    assert!(out.contains("Recovery phrase"), "{out}");
    let phrase = out
        .lines()
        .skip_while(|l| !l.starts_with("Recovery phrase"))
        .nth(1)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        operator
            .fails(&["--data", n1.to_str().unwrap(), "account", "export", "again"])
            .contains("already here")
    );
    let n2 = fabric.node(2);
    let tmp = tempfile::tempdir().unwrap();
    let got = tmp.path().join("got");
    operator.ok(&[
        "--data",
        n2.to_str().unwrap(),
        "--account",
        "node",
        "get",
        "legacy/old.bin",
        "-o",
        got.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&got).unwrap() == bytes);
    // And from another machine, with the phrase alone.
    let elsewhere = User {
        config: tempfile::tempdir().unwrap(),
    };
    elsewhere.ok(&["account", "recover", "old", "--phrase", &phrase]);
    let n3 = fabric.node(3);
    elsewhere.ok(&[
        "--data",
        n3.to_str().unwrap(),
        "get",
        "legacy/old.bin",
        "-o",
        got.to_str().unwrap(),
    ]);
    assert!(std::fs::read(&got).unwrap() == bytes);
    let mine = elsewhere.ok(&["--data", n3.to_str().unwrap(), "ls", "legacy"]);
    assert!(mine.contains("old.bin"), "{mine}");
    // A data dir without an old account says so.
    let empty = tempfile::tempdir().unwrap();
    assert!(
        operator
            .fails(&[
                "--data",
                empty.path().to_str().unwrap(),
                "account",
                "export"
            ])
            .contains("no account.key")
    );
}

#[test]
fn no_disk_holds_names_metadata_or_hashes_of_what_was_stored() {
    let fabric = up(&["--nodes", "4", "--no-wan"]);
    let (alice, _) = User::with_account();
    let n1 = fabric.node(1);
    let n1 = n1.to_str().unwrap();
    alice.ok(&[
        "--data",
        n1,
        "bucket",
        "create",
        "hashes",
        "--versions",
        "3",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let bytes: Vec<u8> = (0..(5 << 20) + 3).map(|i: u32| (i % 241) as u8).collect();
    let file = tmp.path().join("f");
    std::fs::write(&file, &bytes).unwrap();
    let (dir, name) = ("boardroom-minutes", "confidential-forecast.txt");
    let path = format!("hashes/{dir}/{name}");
    alice.ok(&["--data", n1, "put", file.to_str().unwrap(), &path]);
    alice.ok(&["--data", n1, "put", file.to_str().unwrap(), &path]); // a kept version too
    alice.ok(&["--data", n1, "put", file.to_str().unwrap()]);
    // Through S3: a content type, user metadata, an MD5 ETag; a multipart upload completed
    // and one left in progress.
    let key = alice.ok(&["--data", n1, "key", "create"]);
    let s3 = S3::new(&fabric.node(2), &key);
    let (ctype, meta) = ("application/x-undisclosed-kind", "meta-value-nobody-reads");
    let small = b"quarterly numbers, not for the storage providers".to_vec();
    let (status, etag) = s3.put_with(
        "hashes",
        "s3-secret-object.csv",
        &small,
        &[("content-type", ctype), ("x-amz-meta-codename", meta)],
    );
    assert_eq!(status, 200);
    let md5_hex = etag.trim_matches('"').to_string();
    assert_eq!(md5_hex.len(), 32, "{etag}");
    let (status, upload) = s3.create_upload("hashes", "merger-plan-in-progress.bin");
    assert_eq!(status, 200);
    let (status, part_etag) = s3.upload_part(
        "hashes",
        "merger-plan-in-progress.bin",
        &upload,
        1,
        b"part bytes of a plan",
    );
    assert_eq!(status, 200);
    let part_md5 = part_etag.trim_matches('"').to_string();
    let (_, done) = s3.create_upload("hashes", "assembled-dossier.bin");
    let (_, tag) = s3.upload_part("hashes", "assembled-dossier.bin", &done, 1, b"dossier");
    assert_eq!(
        s3.complete("hashes", "assembled-dossier.bin", &done, &[&tag]),
        200
    );
    // The content id and every segment's BLAKE3 (4 MiB segments), raw and in hex; the MD5s.
    let mut hashes: Vec<Vec<u8>> = vec![blake3::hash(&bytes).as_bytes().to_vec()];
    for seg in bytes.chunks(4 << 20) {
        hashes.push(blake3::hash(seg).as_bytes().to_vec());
    }
    for md5 in [&md5_hex, &part_md5] {
        hashes.push(
            (0..16)
                .map(|i| u8::from_str_radix(&md5[2 * i..2 * i + 2], 16).unwrap())
                .collect(),
        );
    }
    let mut secrets: Vec<Vec<u8>> = hashes
        .iter()
        .map(|h| {
            h.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    secrets.extend(hashes);
    for text in [
        dir,
        name,
        "s3-secret-object",
        "merger-plan",
        "assembled-dossier",
        ctype,
        meta,
        "codename",
    ] {
        secrets.push(text.as_bytes().to_vec());
    }
    let mut scanned = 0;
    let mut stack: Vec<PathBuf> = (1..=4).map(|n| fabric.node(n)).collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Ok(data) = std::fs::read(&path) {
                scanned += 1;
                for s in &secrets {
                    assert!(
                        !data.windows(s.len()).any(|w| w == s.as_slice()),
                        "{} holds {:?}",
                        path.display(),
                        String::from_utf8_lossy(s)
                    );
                }
            }
        }
    }
    assert!(scanned > 20, "only {scanned} files scanned");
    // What was stored still reads, verifies and lists, by its names.
    let out = tmp.path().join("out");
    let n3 = fabric.node(3);
    let n3 = n3.to_str().unwrap();
    alice.ok(&["--data", n3, "get", &path, "-o", out.to_str().unwrap()]);
    assert!(std::fs::read(&out).unwrap() == bytes);
    let listed = alice.ok(&["--data", n3, "ls", "hashes/boardroom-"]);
    assert!(listed.contains(&format!("{dir}/{name}")), "{listed}");
    assert!(!listed.contains("s3-secret"), "{listed}");
    let versions = alice.ok(&["--data", n3, "ls", "--versions", &path]);
    assert_eq!(
        versions.lines().filter(|l| !l.trim().is_empty()).count(),
        2,
        "{versions}"
    );
    let s3 = S3::new(&fabric.node(4), &key);
    let (status, head) = s3.head_headers("hashes", "s3-secret-object.csv");
    assert_eq!(status, 200);
    assert!(
        head.contains(ctype) && head.contains(meta) && head.contains(&md5_hex),
        "{head}"
    );
    let (_, body) = s3.list("hashes");
    assert!(
        body.contains("assembled-dossier.bin") && body.contains(&format!("{dir}/{name}")),
        "{body}"
    );
}

/// The 64-hex account id `weft account show` prints.
fn account_id(user: &User) -> String {
    let out = user.ok(&["account", "show"]);
    out.split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no account id in {out}"))
        .to_string()
}

#[test]
fn a_shared_bucket_is_used_by_its_grantee_through_any_node_until_revoked() {
    let fabric = up(&["--nodes", "4", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let (alice, _) = User::with_account();
    let (bob, _) = User::with_account();
    let (carol, _) = User::with_account();
    let bob_id = account_id(&bob);
    let tmp = tempfile::tempdir().unwrap();
    let plan = tmp.path().join("plan");
    std::fs::write(&plan, b"the team's plan").unwrap();
    alice.ok(&["--data", &node(1), "bucket", "create", "team"]);
    alice.ok(&[
        "--data",
        &node(1),
        "put",
        plan.to_str().unwrap(),
        "team/plan.txt",
    ]);
    let before = bob.fails(&["--data", &node(2), "ls", "team/"]);
    assert!(before.contains("another account"), "{before}");
    // Read only.
    let said = alice.ok(&[
        "--data",
        &node(1),
        "bucket",
        "grant",
        "team",
        &bob_id,
        "--read",
    ]);
    assert!(said.contains("read only"), "{said}");
    let out = tmp.path().join("out");
    for n in 2..=4 {
        let listed = bob.ok(&["--data", &node(n), "ls", "team/"]);
        assert!(listed.contains("plan.txt"), "{listed}");
        bob.ok(&[
            "--data",
            &node(n),
            "get",
            "team/plan.txt",
            "-o",
            out.to_str().unwrap(),
        ]);
        assert_eq!(std::fs::read(&out).unwrap(), b"the team's plan");
    }
    let refused = bob.fails(&["--data", &node(3), "put", plan.to_str().unwrap(), "team/x"]);
    assert!(refused.contains("read-only"), "{refused}");
    assert!(
        carol
            .fails(&["--data", &node(3), "get", "team/plan.txt"])
            .contains("another account")
    );
    let grants = alice.ok(&["--data", &node(2), "bucket", "grants", "team"]);
    assert!(
        grants.contains(&bob_id) && grants.contains("read"),
        "{grants}"
    );
    // Read and write.
    alice.ok(&[
        "--data",
        &node(1),
        "bucket",
        "grant",
        "team",
        &bob_id,
        "--write",
    ]);
    let mine = tmp.path().join("mine");
    std::fs::write(&mine, b"bob's part").unwrap();
    bob.ok(&[
        "--data",
        &node(3),
        "put",
        mine.to_str().unwrap(),
        "team/from-bob.txt",
    ]);
    alice.ok(&[
        "--data",
        &node(4),
        "get",
        "team/from-bob.txt",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&out).unwrap(), b"bob's part");
    // An S3 key of bob's on the shared bucket acts with the grant, on every node.
    let bob_key = bob.ok(&["--data", &node(2), "key", "create", "--bucket", "team"]);
    for n in 1..=4 {
        let (status, body) = S3::new(&fabric.node(n), &bob_key).get("team", "plan.txt");
        assert_eq!((status, body.as_slice()), (200, &b"the team's plan"[..]));
    }
    assert_eq!(
        S3::new(&fabric.node(3), &bob_key).put("team", "via-s3", b"s3"),
        200
    );
    // Only the owner deletes the bucket or shares it further.
    let carol_id = account_id(&carol);
    let owner_only = bob.fails(&[
        "--data",
        &node(2),
        "bucket",
        "grant",
        "team",
        &carol_id,
        "--read",
    ]);
    assert!(owner_only.contains("only its owner"), "{owner_only}");
    assert!(
        bob.fails(&["--data", &node(2), "bucket", "rm", "team"])
            .contains("only its owner")
    );
    // A capability handed out keeps working for anyone.
    let cap = alice.ok(&["--data", &node(1), "share", "team/plan.txt"]);
    let cap = cap
        .split_whitespace()
        .find(|w| w.starts_with("weft"))
        .unwrap()
        .to_string();
    // Revoked: refused on every node within seconds.
    alice.ok(&["--data", &node(1), "bucket", "revoke", "team", &bob_id]);
    let start = Instant::now();
    wait_until(
        "the revocation to reach every node",
        Duration::from_secs(15),
        || {
            (1..=4).all(|n| {
                let out = weft_as(bob.config.path(), &["--data", &node(n), "ls", "team/"]);
                !out.status.success()
            })
        },
    );
    println!(
        "grant revoked everywhere in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    for n in 1..=4 {
        let why = bob.fails(&[
            "--data",
            &node(n),
            "put",
            mine.to_str().unwrap(),
            "team/again",
        ]);
        assert!(
            why.contains("another account") || why.contains("no longer shared"),
            "{why}"
        );
    }
    wait_until(
        "the revoked grant's S3 key to be refused",
        Duration::from_secs(15),
        || (1..=4).all(|n| S3::new(&fabric.node(n), &bob_key).get("team", "plan.txt").0 == 403),
    );
    carol.ok(&["--data", &node(4), "get", &cap, "-o", out.to_str().unwrap()]);
    assert_eq!(std::fs::read(&out).unwrap(), b"the team's plan");
}

#[test]
fn an_invite_only_fabric_serves_the_accounts_its_admin_admitted() {
    let fabric = up(&["--nodes", "3", "--no-wan"]);
    let n1 = fabric.node(1);
    let n1 = n1.to_str().unwrap();
    let n3 = fabric.node(3);
    let n3 = n3.to_str().unwrap();
    let (alice, _) = User::with_account();
    assert!(ok(&["--data", n1, "fabric", "accounts"]).contains("open"));
    let set = ok(&["--data", n1, "fabric", "accounts", "--invite-only"]);
    assert!(set.contains("invite-only (0 admitted"), "{set}");
    // Only the admin node sets it.
    let err = fails(&["--data", n3, "fabric", "accounts", "--open"]);
    assert!(err.contains("admin key"), "{err}");
    std::thread::sleep(Duration::from_secs(4));
    let err = alice.fails(&["--data", n3, "bucket", "create", "pics"]);
    assert!(err.contains("admits accounts by invitation"), "{err}");
    let shown: Value = serde_json::from_str(&alice.ok(&["account", "show", "--json"])).unwrap();
    let id = shown["id"].as_str().unwrap().to_string();
    assert!(ok(&["--data", n1, "fabric", "admit", &id]).contains(&id));
    std::thread::sleep(Duration::from_secs(4));
    alice.ok(&["--data", n3, "bucket", "create", "pics"]);
    // Inference too: her access key works on the OpenAI API while she is admitted.
    let made = alice.ok(&["--data", n3, "key", "create"]);
    let api_key = made
        .lines()
        .find_map(|l| l.strip_prefix("export OPENAI_API_KEY="))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no OPENAI_API_KEY in {made}"))
        .to_string();
    let openai = std::fs::read_to_string(fabric.node(3).join("openai.addr")).unwrap();
    let models = |key: &str| -> u16 {
        match ureq::get(format!("http://{}/v1/models", openai.trim()))
            .header("Authorization", &format!("Bearer {key}"))
            .call()
        {
            Ok(r) => r.status().as_u16(),
            Err(ureq::Error::StatusCode(code)) => code,
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(models(&api_key), 200);
    let listed = ok(&["--data", n1, "fabric", "accounts"]);
    assert!(listed.contains(&format!("admitted {id}")), "{listed}");
    let err = fails(&["--data", n1, "fabric", "admit", "not-an-id"]);
    assert!(err.contains("not an account id"), "{err}");
    ok(&["--data", n1, "fabric", "dismiss", &id]);
    std::thread::sleep(Duration::from_secs(4));
    let err = alice.fails(&["--data", n3, "ls", "pics"]);
    assert!(err.contains("not admitted"), "{err}");
    assert_eq!(
        models(&api_key),
        403,
        "a dismissed account's key on the OpenAI API"
    );
}
