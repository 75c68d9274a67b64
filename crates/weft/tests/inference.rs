//! The OpenAI-compatible API as clients use it: the official `openai` Python client against a
//! node that does not host the models, and routing across emulated sites — nearest replica,
//! failover after `kill -9`, requests kept inside the regions they allow.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use weft_cluster::LocalFabric;
use weft_cluster::cli::*;

/// The OpenAI base URL of a node (`http://ADDR/v1`).
fn base_url(node: &Path) -> String {
    let addr = std::fs::read_to_string(node.join("openai.addr")).expect("openai.addr");
    format!("http://{}/v1", addr.trim())
}

/// An API key (the `OPENAI_API_KEY` line of `weft key create`).
fn api_key(user: &User, node: &str) -> String {
    let out = user.ok(&["--data", node, "key", "create"]);
    let line = out
        .lines()
        .find_map(|l| l.strip_prefix("export OPENAI_API_KEY="))
        .unwrap_or_else(|| panic!("no OPENAI_API_KEY in {out}"));
    line.split_whitespace().next().unwrap().to_string()
}

/// A fabric with a bucket of models added by one user: (fabric, user, key).
fn fabric_with(
    up: &[&str],
    models: &[(&str, &Path, u32)],
    expect_ready: usize,
) -> (LocalFabric, User, String) {
    let fabric = weft_cluster::cli::up(up);
    let node1 = fabric.node(1).to_str().unwrap().to_string();
    let (user, _) = User::with_account();
    user.ok(&[
        "--data",
        &node1,
        "bucket",
        "create",
        "weights",
        "--regions",
        "eu,us",
    ]);
    for (name, path, replicas) in models {
        user.ok(&[
            "--data",
            &node1,
            "model",
            "add",
            name,
            path.to_str().unwrap(),
            "--bucket",
            "weights",
            "--replicas",
            &replicas.to_string(),
        ]);
    }
    for (name, _, _) in models {
        wait_until(
            &format!("{name} to be ready"),
            Duration::from_secs(120),
            || ready(&user, &node1, name).len() >= expect_ready,
        );
    }
    let key = api_key(&user, &node1);
    (fabric, user, key)
}

#[test]
fn the_openai_python_client_works_against_a_node_that_does_not_host_the_models() {
    let (minilm, smollm2) = models();
    // node1 (the fabric's first) has no inference role: every request it takes is routed.
    let (fabric, user, key) = fabric_with(
        &["--sites", "eu:2,us:1", "--no-wan", "--inference-queue", "2"],
        &[("minilm", &minilm, 1), ("smollm2", &smollm2, 1)],
        1,
    );
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = std::process::Command::new(repo.join("scripts/openai-client.sh"))
        .output()
        .expect("scripts/openai-client.sh runs");
    assert!(
        out.status.success(),
        "scripts/openai-client.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let python = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let run = std::process::Command::new(&python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/openai/client.py"))
        .args([&base_url(&fabric.node(1)), &key, "minilm", "smollm2"])
        .output()
        .expect("the client script runs");
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "the openai client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!((summary["cosine"].as_f64().unwrap() - 0.7553).abs() < 2e-3);
    // node1 took every request and ran none of them.
    let health = get_json(&fabric.node(1), "/health");
    assert_eq!(health["requests"]["served"], 0, "{health}");
    assert!(
        health["requests"]["forwarded"].as_u64().unwrap() >= 8,
        "{health}"
    );
    // Every request answered left a receipt of the replica that answered it, for the
    // account, in the fabric's ledger: the model and the tokens, never the prompt.
    let node1 = fabric.node(1).to_str().unwrap().to_string();
    let start = std::time::Instant::now();
    let receipts = loop {
        let out = user.ok(&[
            "--data", &node1, "ledger", "receipts", "--json", "--last", "1000",
        ]);
        let all: Vec<Value> = serde_json::from_str(&out).unwrap();
        let inference: Vec<Value> = all
            .into_iter()
            .filter(|r| r["work"]["inference"].is_object())
            .collect();
        if inference.len() >= 8 || start.elapsed() > Duration::from_secs(30) {
            break inference;
        }
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(receipts.len() >= 8, "{receipts:#?}");
    for r in &receipts {
        let w = &r["work"]["inference"];
        assert!(
            ["minilm", "smollm2"].contains(&w["model"].as_str().unwrap()),
            "{r}"
        );
        assert!(w["tokens_in"].as_u64().unwrap() > 0, "{r}");
    }
    let verified = user.ok(&["--data", &node1, "ledger", "verify"]);
    assert!(verified.contains("proven included"), "{verified}");
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn get_json(node: &Path, path: &str) -> Value {
    let url = base_url(node).trim_end_matches("/v1").to_string() + path;
    agent()
        .get(&url)
        .call()
        .unwrap()
        .body_mut()
        .read_json()
        .unwrap()
}

/// Requests this node ran.
fn served(node: &Path) -> u64 {
    get_json(node, "/health")["requests"]["served"]
        .as_u64()
        .unwrap()
}

/// An embeddings request through `node`: (status, the node that computed it, body).
fn embed(node: &Path, key: &str, regions: Option<&str>) -> (u16, String, Value) {
    let mut req = agent()
        .post(format!("{}/embeddings", base_url(node)))
        .header("Authorization", format!("Bearer {key}"));
    if let Some(r) = regions {
        req = req.header("X-Weft-Regions", r);
    }
    let mut resp = req
        .send_json(json!({"model": "minilm", "input": ["where does this run?"]}))
        .unwrap();
    let status = resp.status().as_u16();
    let by = resp
        .headers()
        .get("x-weft-node")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    (status, by, resp.body_mut().read_json().unwrap())
}

#[test]
fn requests_go_to_the_nearest_replica_fail_over_and_never_leave_their_regions() {
    let (minilm, _) = models();
    // eu: node1 (no inference role: the entry) and node2; us: node3. 40 ms one way between
    // the sites. The model's two replicas land one per site: node2 and node3.
    let (fabric, user, key) = fabric_with(
        &["--sites", "eu:2,us:1", "--wan", "eu-us=40ms"],
        &[("minilm", &minilm, 2)],
        2,
    );
    let (n1, n2, n3) = (fabric.node(1), fabric.node(2), fabric.node(3));
    let id2 = id(&fabric.node(2));
    let id3 = id(&fabric.node(3));
    // The entry learns round trips as it probes; give coordinates a moment.
    wait_until(
        "node1 to measure its round trips",
        Duration::from_secs(30),
        || {
            let (status, by, _) = embed(&n1, &key, None);
            status == 200 && by == id2
        },
    );
    let (before2, before3) = (served(&n2), served(&n3));
    for _ in 0..10 {
        let (status, by, body) = embed(&n1, &key, None);
        assert_eq!(status, 200, "{body}");
        assert_eq!(by, id2, "the nearer replica (same site) answers");
        assert_eq!(body["data"][0]["embedding"].as_array().unwrap().len(), 384);
    }
    for _ in 0..5 {
        let (status, by, body) = embed(&n1, &key, Some("eu"));
        assert_eq!((status, by.as_str()), (200, id2.as_str()), "{body}");
    }
    assert_eq!(served(&n2) - before2, 15, "node2 ran the 15 requests");
    assert_eq!(served(&n3), before3, "node3 saw none of them");
    // A node that holds the model answers its own clients.
    let (status, by, _) = embed(&n3, &key, None);
    assert_eq!((status, by.as_str()), (200, id3.as_str()));

    // The admin's quotas hold on every node: tokens per minute, as the ledger's receipts
    // count them (about a second behind), then a free allowance of nothing.
    let admin = n1.to_str().unwrap();
    let shown = user.ok(&["account", "show"]);
    let account = shown
        .split_whitespace()
        .find(|w| w.len() == 64 && w.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no account id in {shown}"))
        .to_string();
    let set = ok(&[
        "--data",
        admin,
        "fabric",
        "quota",
        &account,
        "--tokens-per-minute",
        "20",
    ]);
    assert!(set.contains("AI tokens per minute: 20"), "{set}");
    let mut limited = None;
    wait_until(
        "the tokens quota to refuse",
        Duration::from_secs(60),
        || {
            let (status, _, body) = embed(&n1, &key, None);
            if status == 429 {
                limited = Some(body);
                true
            } else {
                assert_eq!(status, 200, "{body}");
                std::thread::sleep(Duration::from_millis(300));
                false
            }
        },
    );
    let body = limited.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("its quota is 20 tokens per minute"),
        "{body}"
    );
    // Refused through the node that holds the model too (once it has read the quota): the
    // count is the fabric's.
    wait_until("node3 to refuse too", Duration::from_secs(10), || {
        embed(&n3, &key, None).0 == 429
    });
    ok(&[
        "--data",
        admin,
        "fabric",
        "quota",
        &account,
        "--tokens-per-minute",
        "none",
        "--allowance",
        "0",
    ]);
    let mut unpaid = None;
    wait_until("the allowance to refuse", Duration::from_secs(30), || {
        let (status, _, body) = embed(&n3, &key, None);
        unpaid = Some(body);
        status == 402
    });
    let body = unpaid.unwrap();
    assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    // Every node reads the quota at most 3 s old.
    wait_until(
        "the balance to show the allowance",
        Duration::from_secs(10),
        || {
            let balance = user.ok(&["--data", admin, "ledger", "balance", "--json"]);
            serde_json::from_str::<Value>(&balance).unwrap()["allowance"] == 0
        },
    );
    // Cleared, the account has the default again.
    ok(&["--data", admin, "fabric", "quota", &account, "--clear"]);
    wait_until("the quota to be lifted", Duration::from_secs(30), || {
        embed(&n1, &key, None).0 == 200
    });
    // A request's maximum price keeps it off replicas that charge more (every node here
    // charges the default 0.001 credits per 1,000 tokens).
    let priced = |max: &str| {
        let mut resp = agent()
            .post(format!("{}/embeddings", base_url(&n1)))
            .header("Authorization", format!("Bearer {key}"))
            .header("X-Weft-Max-Price", max)
            .send_json(json!({"model": "minilm", "input": ["how much?"]}))
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_json::<Value>().unwrap())
    };
    let (status, body) = priced("0.0005");
    assert_eq!(status, 503, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("priced at or under 0.000500 credits per 1,000 tokens"),
        "{body}"
    );
    assert_eq!(priced("0.001").0, 200);
    assert_eq!(priced("lots").0, 400);

    // kill -9 of the nearer replica: the next request is taken by the other one.
    signal(&n2, "-9");
    let started = Instant::now();
    let (status, by, body) = embed(&n1, &key, None);
    assert_eq!((status, by.as_str()), (200, id3.as_str()), "{body}");
    let failover = started.elapsed();
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );
    for _ in 0..5 {
        let (status, by, _) = embed(&n1, &key, None);
        assert_eq!((status, by.as_str()), (200, id3.as_str()));
    }
    // Limited to eu, with no eu replica up: a clear error, and the us replica never sees it.
    let us_before = served(&n3);
    for _ in 0..5 {
        let (status, _, body) = embed(&n1, &key, Some("eu"));
        assert_eq!(status, 503, "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("no replica") && message.contains("eu"),
            "{message}"
        );
    }
    assert_eq!(served(&n3), us_before, "the us replica saw no eu request");
    println!("failover after kill -9: {failover:?}");
}
