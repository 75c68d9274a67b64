//! Models as fabric objects, through the CLI as a user would: added from local files, fetched,
//! verified and loaded by the nodes the placement picks, moved when the placement or the
//! membership changes.

use std::time::Duration;

use weft_cluster::cli::*;

#[test]
fn a_model_is_fetched_verified_and_loaded_where_its_placement_says_and_moves_with_it() {
    let (minilm, _) = models();
    let fabric = up(&["--sites", "eu:3,us:2", "--no-wan"]);
    let node = |n: usize| fabric.node(n).to_str().unwrap().to_string();
    let ids = sites(&fabric, 5);
    let (alice, _) = User::with_account();
    alice.ok(&[
        "--data",
        &node(1),
        "bucket",
        "create",
        "weights",
        "--regions",
        "eu,us",
    ]);
    let added = alice.ok(&[
        "--data",
        &node(2),
        "model",
        "add",
        "minilm",
        minilm.to_str().unwrap(),
        "--bucket",
        "weights",
        "--replicas",
        "2",
    ]);
    assert!(
        added.contains("added model minilm (embeddings, 3 file(s)"),
        "{added}"
    );
    let mut two = Vec::new();
    wait_until("two replicas to load it", Duration::from_secs(120), || {
        two = ready(&alice, &node(3), "minilm");
        two.len() == 2
    });
    // One per site, on inference nodes (node1, the fabric's first, has no inference role).
    let mut placed_sites: Vec<String> = two.iter().map(|n| ids[n].1.clone()).collect();
    placed_sites.sort();
    placed_sites.dedup();
    assert_eq!(placed_sites.len(), 2, "{two:?}");
    assert!(two.iter().all(|n| ids[n].0 != 1), "{two:?}");
    // The weights were fetched and checked: each holder caches the safetensors under its
    // BLAKE3, byte-identical; no other node has it.
    let want = blake3::hash(&std::fs::read(minilm.join("model.safetensors")).unwrap());
    for (id, (n, _)) in &ids {
        let cached = fabric
            .node(*n)
            .join("models/files")
            .join(want.to_hex().as_str());
        assert_eq!(
            cached.exists(),
            two.contains(id),
            "node{n}: {}",
            cached.display()
        );
        if cached.exists() {
            assert_eq!(blake3::hash(&std::fs::read(&cached).unwrap()), want);
        }
    }

    // Placed in us only, on one node: the eu holder lets go, one us node holds it.
    alice.ok(&[
        "--data",
        &node(4),
        "model",
        "place",
        "minilm",
        "--replicas",
        "1",
        "--region",
        "us",
    ]);
    let mut us = Vec::new();
    wait_until(
        "the model to move to one us node",
        Duration::from_secs(60),
        || {
            let all = replicas(&alice, &node(1), "minilm");
            us = ready(&alice, &node(1), "minilm");
            all.len() == 1 && us.len() == 1 && ids[&us[0]].1 == "us"
        },
    );

    // Its holder dies: the other us node takes it over.
    let victim = ids[&us[0]].0;
    signal(&fabric.node(victim), "-9");
    let other = (1..=5)
        .find(|&n| n != victim && ids.values().any(|v| v.0 == n && v.1 == "us"))
        .unwrap();
    let asker = node(if victim == 2 { 3 } else { 2 });
    wait_until(
        "the other us node to load it",
        Duration::from_secs(60),
        || {
            ready(&alice, &asker, "minilm")
                .iter()
                .any(|n| ids[n].0 == other)
        },
    );

    // A file that is no model fails to load, and says why.
    let junk = fabric.root().join("junk.gguf");
    std::fs::write(&junk, b"this is not a GGUF file").unwrap();
    alice.ok(&[
        "--data",
        &asker,
        "model",
        "add",
        "junk",
        junk.to_str().unwrap(),
        "--bucket",
        "weights",
    ]);
    wait_until("the junk model to fail", Duration::from_secs(60), || {
        replicas(&alice, &asker, "junk")
            .iter()
            .any(|(_, s, e)| s == "failed" && !e.is_empty())
    });
    let shown = alice.ok(&["--data", &asker, "model", "ls"]);
    assert!(
        shown.contains("junk") && shown.contains("failed"),
        "{shown}"
    );

    // Another account can neither change, remove nor take the names.
    let (mallory, _) = User::with_account();
    let err = mallory.fails(&[
        "--data",
        &asker,
        "model",
        "place",
        "minilm",
        "--replicas",
        "3",
    ]);
    assert!(err.contains("belongs to another account"), "{err}");
    let err = mallory.fails(&["--data", &asker, "model", "rm", "junk"]);
    assert!(err.contains("belongs to another account"), "{err}");
    mallory.ok(&["--data", &asker, "bucket", "create", "mallorys"]);
    let err = mallory.fails(&[
        "--data",
        &asker,
        "model",
        "add",
        "minilm",
        junk.to_str().unwrap(),
        "--bucket",
        "mallorys",
    ]);
    assert!(err.contains("already exists"), "{err}");
    // Bad requests are explained.
    let err = alice.fails(&[
        "--data",
        &asker,
        "model",
        "add",
        "Bad Name",
        junk.to_str().unwrap(),
        "--bucket",
        "weights",
    ]);
    assert!(err.contains("model name"), "{err}");
    let err = alice.fails(&[
        "--data",
        &asker,
        "model",
        "add",
        "x",
        minilm.join("config.json").to_str().unwrap(),
        "--bucket",
        "weights",
    ]);
    assert!(err.contains(".gguf"), "{err}");
    alice.ok(&["--data", &asker, "model", "rm", "junk"]);
    let listed = alice.ok(&["--data", &asker, "model", "ls"]);
    assert!(
        !listed.contains("junk") && listed.contains("minilm"),
        "{listed}"
    );
}
