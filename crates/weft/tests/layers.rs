//! Dependencies point down the layers of ARCHITECTURE.md, checked from the manifests.

const LAYERS: [&str; 10] = [
    "core", "net", "fabric", "meta", "store", "heal", "node", "s3", "api", "weft",
];

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
    for (level, krate) in LAYERS.iter().enumerate() {
        for dep in dependencies(krate) {
            if let Some(inner) = dep.strip_prefix("weft-") {
                let dep_level = LAYERS.iter().position(|l| *l == inner).unwrap();
                assert!(dep_level < level, "weft-{krate} must not depend on {dep}");
            }
        }
    }
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
