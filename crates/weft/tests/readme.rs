//! The README's walk-through, run as printed: every `weft` line of its shell blocks after
//! `weft up`, in a fresh home directory, with only the placeholders the README marks with
//! `...` filled in from what earlier commands printed.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

struct Home {
    dir: tempfile::TempDir,
}

impl Home {
    fn weft(&self, args: &[String]) -> std::process::Output {
        Command::new(weft_cluster::process::binary())
            .args(args)
            .current_dir(self.dir.path())
            .env("HOME", self.dir.path())
            .env_remove("XDG_CONFIG_HOME")
            .env_remove("WEFT_CONFIG")
            .env_remove("WEFT_DATA")
            .env_remove("WEFT_ACCOUNT")
            .env_remove("WEFT_NODE")
            .stdin(Stdio::null())
            .output()
            .expect("weft runs")
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        let _ = self.weft(&["down".to_string()]);
    }
}

/// The `weft` commands of the README's shell blocks between `start` and `end` (the first lines
/// of the blocks), comments removed, `;`-separated commands split.
fn commands(readme: &str, start: &str, end: &str) -> Vec<Vec<String>> {
    let begin = readme.find(start).expect("walk-through start in README");
    let stop = begin
        + readme[begin..]
            .find(end)
            .unwrap_or_else(|| panic!("walk-through end {end:?} not in README"));
    let mut out = Vec::new();
    let mut in_block = false;
    for line in readme[begin..stop].lines() {
        if line.starts_with("```") {
            in_block = !in_block;
            continue;
        }
        if !in_block {
            continue;
        }
        let code = line.split(" #").next().unwrap_or("").trim();
        // `"$(scripts/models.sh NAME)"` is one argument: the model's path.
        let code = code
            .replace("\"$(scripts/models.sh minilm)\"", "MODEL:minilm")
            .replace("\"$(scripts/models.sh smollm2)\"", "MODEL:smollm2");
        for cmd in code.split(';').map(str::trim) {
            if let Some(rest) = cmd.strip_prefix("weft ") {
                out.push(rest.split_whitespace().map(String::from).collect());
            }
        }
    }
    out
}

/// `scripts/models.sh NAME`: where the model's files are (installed on first use).
fn model_path(name: &str) -> String {
    let out = Command::new(repo().join("scripts/models.sh"))
        .arg(name)
        .output()
        .expect("scripts/models.sh runs");
    assert!(
        out.status.success(),
        "scripts/models.sh {name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_readme_walk_through_works_as_printed() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let home = Home {
        dir: tempfile::tempdir().unwrap(),
    };
    let cwd = home.dir.path();
    for (name, len) in [
        ("trip.jpg", 5_000_000usize),
        ("file.bin", 70_000),
        ("report.pdf", 1_000),
        ("report-v2.pdf", 2_000),
    ] {
        let bytes: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        std::fs::write(cwd.join(name), bytes).unwrap();
    }
    std::fs::write(
        cwd.join("access.log"),
        "GET /index.html 200\nGET /missing 404\nPOST /login 200\n",
    )
    .unwrap();
    // `scripts/build-examples.sh ./jobs`, as the jobs section does.
    let built = Command::new(repo().join("scripts/build-examples.sh"))
        .arg(cwd.join("jobs"))
        .status()
        .expect("scripts/build-examples.sh runs");
    assert!(built.success(), "building the example jobs failed");
    // `cargo run --release -- up`, as the README's first command, with this test's binary.
    let up = home.weft(&["up".into(), "--timeout".into(), "60".into()]);
    assert!(
        up.status.success(),
        "weft up: {}",
        String::from_utf8_lossy(&up.stderr)
    );
    let mut steps = commands(&readme, "Make yourself an account", "Your account is yours");
    steps.extend(commands(
        &readme,
        "Every node also serves the S3 API",
        "## Jobs",
    ));
    steps.extend(commands(&readme, "## Jobs", "## Models"));
    steps.extend(commands(&readme, "## Models", "## The ledger"));
    assert!(steps.len() >= 18, "walk-through not found: {steps:?}");
    let (mut capability, mut version, mut key) = (String::new(), String::new(), String::new());
    let mut job = String::new();
    let mut openai_env = String::new();
    for step in steps {
        let args: Vec<String> = step
            .iter()
            .map(|a| match a.as_str() {
                "weft-cap1-..." => capability.clone(),
                "1795...-a1b2c3d4" => version.clone(),
                "WK..." => key.clone(),
                "logs/01a2..." => job.clone(),
                a if a.starts_with("MODEL:") => model_path(&a["MODEL:".len()..]),
                a => a.replace("~/", &format!("{}/", cwd.display())),
            })
            .collect();
        let out = home.weft(&args);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "weft {}: {}{}",
            args.join(" "),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if let Some(id) = stdout
            .split_whitespace()
            .chain(stderr.split_whitespace())
            .find(|w| {
                w.strip_prefix("logs/")
                    .is_some_and(|id| id.len() == 16 && id.chars().all(|c| c.is_ascii_hexdigit()))
            })
        {
            job = id.to_string();
        }
        if let Some(cap) = stdout
            .split_whitespace()
            .find(|w| w.starts_with("weft-cap1-"))
        {
            capability = cap.to_string();
        }
        if args.iter().any(|a| a == "--versions") {
            // The older of the two versions.
            version = stdout
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_string();
        }
        if let Some(line) = stdout
            .lines()
            .find_map(|l| l.strip_prefix("export OPENAI_API_KEY="))
        {
            openai_env = line.to_string();
        }
        if let Some(id) = stdout
            .lines()
            .find_map(|l| l.strip_prefix("access key"))
            .map(str::trim)
        {
            key = id.to_string();
        }
    }
    // The AI API section's shell lines, as printed, with the line `weft key create` printed.
    assert!(!openai_env.is_empty(), "no OPENAI_API_KEY line");
    let mut env = openai_env.split_whitespace();
    let api_key = env.next().unwrap().to_string();
    let base_url = env
        .find_map(|v| v.strip_prefix("OPENAI_BASE_URL="))
        .expect("OPENAI_BASE_URL")
        .to_string();
    for model in ["minilm", "smollm2"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            let out = home.weft(&["model".into(), "ls".into(), "--json".into()]);
            let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            // Every replica it asks for ready (a request kept to one region needs that
            // region's replica, not just any).
            let ready = all.as_array().is_some_and(|a| {
                a.iter().any(|m| {
                    let wanted = m["replicas"].as_u64().unwrap_or(1) as usize;
                    m["name"] == model
                        && m["replicas_now"].as_array().is_some_and(|r| {
                            r.iter().filter(|r| r["state"] == "ready").count() >= wanted
                        })
                })
            });
            if ready {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{model} never ready");
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
    let section = &readme[readme.find("## AI API").unwrap()..];
    let block = section
        .split("```sh")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let mut shell = Vec::new();
    let mut pending = String::new();
    for line in block.lines() {
        let line = line.trim_end();
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont);
            continue;
        }
        pending.push_str(line);
        let cmd = std::mem::take(&mut pending);
        if cmd.starts_with("curl ") {
            shell.push(cmd);
        }
    }
    assert_eq!(shell.len(), 3, "{shell:?}");
    for (cmd, expect) in shell
        .iter()
        .zip(["\"smollm2\"", "\"embedding\"", "data: [DONE]"])
    {
        let out = Command::new("sh")
            .args(["-c", cmd])
            .env("OPENAI_API_KEY", &api_key)
            .env("OPENAI_BASE_URL", &base_url)
            .output()
            .expect("sh runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && text.contains(expect),
            "{cmd}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The ledger's section, after storing, running jobs and chatting: the chat's receipt
    // reaches the cosigned log within moments, and the balance shows what it all cost.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = home.weft(&[
            "ledger".into(),
            "history".into(),
            "--last".into(),
            "1000".into(),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if text.contains("inference") && text.contains(" job ") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no job and inference charges in the history: {text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    for step in commands(&readme, "## The ledger", "## A fabric across machines") {
        let out = home.weft(&step);
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "weft {}: {}{}",
            step.join(" "),
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        if step.starts_with(&["ledger".to_string(), "balance".to_string()]) {
            let spent = stdout
                .lines()
                .find_map(|l| l.trim().strip_prefix("spent"))
                .unwrap_or_default();
            assert!(!spent.trim().starts_with("0.000000"), "{stdout}");
        }
        if step.starts_with(&["node".to_string(), "earnings".to_string()]) {
            assert!(
                stdout.contains("earned") && stdout.contains("prices"),
                "{stdout}"
            );
        }
    }
    let old = std::fs::read(cwd.join("old.pdf")).unwrap();
    assert!(
        old == std::fs::read(cwd.join("report.pdf")).unwrap(),
        "old.pdf is not v1"
    );
}
