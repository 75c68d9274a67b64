//! The rules of ARCHITECTURE.md that a machine can check: dependencies point down the layers
//! (from the manifests), front ends see only the node's face, tasks are spawned only through
//! their owner, row keys are made only by schemas, core does no IO.

/// The layers, lowest first. Crates on one row are siblings: none uses another.
const LAYERS: &[&[&str]] = &[
    &["core"],
    &["infer", "tlog"],
    &["net"],
    &["fabric"],
    &["meta"],
    &["store"],
    &["host"],
    &["ledger"],
    &["heal"],
    &["compute"],
    &["data"],
    &["jobs"],
    &["inference"],
    &["node"],
    &["s3", "openai", "api"],
    &["cluster"],
    &["bench"],
    &["weft"],
];

/// The front ends: they call the node's typed face.
const FRONT_ENDS: [&str; 3] = ["api", "s3", "openai"];

/// What a front end may depend on among weft's crates: the node and its services, and core.
const FACE: [&str; 7] = [
    "weft-core",
    "weft-node",
    "weft-data",
    "weft-jobs",
    "weft-inference",
    "weft-ledger",
    "weft-tlog",
];

fn level(krate: &str) -> usize {
    LAYERS
        .iter()
        .position(|row| row.contains(&krate))
        .unwrap_or_else(|| panic!("crate {krate} is in no layer of tests/layers.rs"))
}

/// Every crate of the workspace (`crates/*`).
fn crates() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.path().join("Cargo.toml").exists())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    out.sort();
    out
}

fn dependencies(krate: &str) -> Vec<String> {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let deps = text
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    deps.lines()
        .filter_map(|l| l.split(['.', ' ', '=']).next())
        .filter(|name| !name.is_empty())
        .map(String::from)
        .collect()
}

#[test]
fn weft_crates_depend_only_on_lower_layers() {
    let all = crates();
    assert!(all.len() >= 17, "crate scan broke: {all:?}");
    for krate in &all {
        let mine = level(krate);
        for dep in dependencies(krate) {
            if let Some(inner) = dep.strip_prefix("weft-") {
                assert!(
                    level(inner) < mine,
                    "weft-{krate} must not depend on {dep} (layers in tests/layers.rs)"
                );
            }
        }
    }
}

#[test]
fn front_ends_depend_only_on_the_node_and_its_services() {
    for krate in FRONT_ENDS {
        let deps = dependencies(krate);
        assert!(
            deps.iter().any(|d| d == "weft-node"),
            "manifest parsing broke: {deps:?}"
        );
        for dep in deps.iter().filter(|d| d.starts_with("weft-")) {
            assert!(
                FACE.contains(&dep.as_str()),
                "front end weft-{krate} depends on {dep}: call the node's services instead"
            );
        }
        for (path, text) in sources(krate) {
            for reach in [
                ".storage()",
                ".table()",
                ".fabric()",
                ".context()",
                ".healer()",
            ] {
                assert!(
                    !text.contains(reach),
                    "{} reaches past the node's face ({reach}): add a typed operation to the node or its service",
                    path.display()
                );
            }
        }
    }
}

/// Every task is spawned through its owner (the endpoint, through a service's context), so
/// `Node::shutdown` stops it: no library crate calls tokio's spawn itself, and the binary
/// neither.
#[test]
fn tasks_are_spawned_only_through_their_owner() {
    let owner = std::path::Path::new("net/src/endpoint.rs");
    let mut scanned = 0;
    for krate in crates() {
        for (path, text) in sources(&krate) {
            scanned += 1;
            if path.ends_with(owner) {
                continue;
            }
            for bare in ["tokio::spawn(", "tokio::task::spawn(", "task::spawn("] {
                assert!(
                    !text.contains(bare),
                    "{} calls {bare}: spawn through the node (Context::tasks, Node::spawn) so shutdown stops it",
                    path.display()
                );
            }
        }
    }
    assert!(scanned > 100, "source scan broke: {scanned} files");
}

#[test]
fn core_does_no_io() {
    let deps = dependencies("core");
    for io in [
        "tokio",
        "quinn",
        "rustls",
        "axum",
        "foca",
        "ureq",
        "getrandom",
    ] {
        assert!(!deps.iter().any(|d| d == io), "weft-core depends on {io}");
    }
    assert!(
        deps.iter().any(|d| d == "postcard"),
        "manifest parsing broke: {deps:?}"
    );
}

#[test]
fn infer_is_an_engine_that_knows_no_weft_crate_and_no_network() {
    let deps = dependencies("infer");
    for dep in &deps {
        assert!(!dep.starts_with("weft-"), "weft-infer depends on {dep}");
    }
    for io in ["tokio", "quinn", "axum", "ureq", "hyper-util"] {
        assert!(!deps.iter().any(|d| d == io), "weft-infer depends on {io}");
    }
    assert!(
        deps.iter().any(|d| d == "candle-core"),
        "manifest parsing broke: {deps:?}"
    );
}

#[test]
fn the_openai_api_knows_neither_the_engine_nor_the_network() {
    let deps = dependencies("openai");
    for dep in [
        "weft-infer",
        "weft-net",
        "weft-fabric",
        "weft-store",
        "quinn",
        "candle-core",
    ] {
        assert!(
            !deps.iter().any(|d| d == dep),
            "weft-openai depends on {dep}"
        );
    }
    assert!(
        deps.iter().any(|d| d == "weft-node"),
        "manifest parsing broke: {deps:?}"
    );
}

/// Every `.rs` file under `crates/<krate>/src`, with its text.
fn sources(krate: &str) -> Vec<(std::path::PathBuf, String)> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(krate)
        .join("src");
    let mut out = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    out
}

fn is_schema_module(path: &std::path::Path) -> bool {
    path.file_name().is_some_and(|f| f == "schema.rs")
}

/// Row keys are made only by schemas: every schema lives in a `schema.rs`, and no other source
/// file of a crate above the table spells a row kind's key prefix or calls the replica's raw,
/// string-keyed interface.
#[test]
fn row_keys_are_formatted_only_in_schema_modules() {
    // (weft-openai is left out: it never reaches the table — see the test above — and its
    // JSON spells OpenAI's field names, such as "model".)
    let above_table = [
        "store",
        "host",
        "heal",
        "compute",
        "data",
        "jobs",
        "inference",
        "node",
        "s3",
        "api",
        "cluster",
        "bench",
        "weft",
    ];
    let mut kinds = Vec::new();
    for krate in above_table {
        for (path, text) in sources(krate) {
            let declares = text.contains("impl Schema for")
                || text.contains("impl weft_meta::Schema for")
                || text.contains("row_kind! {");
            assert!(
                !declares || is_schema_module(&path),
                "{} declares a table schema outside a schema.rs",
                path.display()
            );
            for line in text.lines() {
                let line = line.trim();
                if let Some(rest) = line
                    .strip_prefix("const KIND: &'static str = \"")
                    .or_else(|| line.strip_prefix("kind: \""))
                {
                    kinds.push(
                        rest.trim_end_matches("\";")
                            .trim_end_matches("\",")
                            .to_string(),
                    );
                }
            }
        }
    }
    assert!(
        ["bucket", "obj", "m", "r", "rep", "model", "serve", "job"]
            .iter()
            .all(|k| kinds.iter().any(|d| d == k)),
        "schema scan broke: {kinds:?}"
    );
    for krate in above_table {
        for (path, text) in sources(krate) {
            // A file that never reaches the table (no `weft_meta`, no `Table`, no `.table()`)
            // cannot make row keys; its strings are CLI words and JSON fields.
            let reaches_table =
                text.contains("weft_meta") || text.contains("Table") || text.contains(".table()");
            if is_schema_module(&path) || !reaches_table {
                continue;
            }
            for kind in &kinds {
                for spelled in [format!("\"{kind}/"), format!("\"{kind}\"")] {
                    // Byte strings (b"...") are data, not keys.
                    let as_key = text
                        .match_indices(&spelled)
                        .any(|(i, _)| !text[..i].ends_with('b'));
                    assert!(
                        !as_key,
                        "{} spells the row key prefix {spelled}: make keys in its schema",
                        path.display()
                    );
                }
            }
            for raw in [".local().get(", ".local().list(", ".local().merge("] {
                assert!(
                    !text.contains(raw),
                    "{} uses the replica's raw interface ({raw}): go through a schema",
                    path.display()
                );
            }
        }
    }
}
