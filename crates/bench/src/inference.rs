//! `weft bench inference`: local AI through the OpenAI-compatible API of a local fabric, and
//! the established engines on the same models, machine and thread count.
//!
//! A 3-node fabric in one site (loopback, no WAN emulation): node1 has no inference role (the
//! *remote* entry), the two models (all-MiniLM-L6-v2, SmolLM2-135M-Instruct, from
//! `scripts/models.sh`) get one replica each. Measured over HTTP on the hosting node:
//! embeddings per second one at a time and in batches of 32; chat prefill tokens/s (prompt
//! tokens over the time to the first streamed token) and decode tokens/s (tokens after the
//! first over the time they took); then time to first token through node1 (routed) and
//! through the hosting node, and the hosting node's peak RSS. Then the anchors
//! (`scripts/anchors.sh`: sentence-transformers on the MiniLM, llama.cpp through
//! llama-cpp-python on the same GGUF, 2 threads) run the same work, and the ratios are printed.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{InferenceArgs, fresh_dir, pct, sorted, weft_cli};
use weft_cluster::UpOptions;

/// Where the project's scripts are: beside the binary's source tree, else `./scripts`.
fn scripts() -> PathBuf {
    let built = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts");
    if built.join("models.sh").exists() {
        built
    } else {
        PathBuf::from("scripts")
    }
}

fn script(name: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(scripts().join(name))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run scripts/{name}"))?;
    if !out.status.success() {
        bail!(
            "scripts/{name} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// The benchmark's texts: the same for weft and the anchors.
fn workload() -> (Vec<String>, Vec<Value>) {
    let sentences = (0..256)
        .map(|i| {
            format!(
                "Sentence number {i} is about storing objects on node {}.",
                i % 7
            )
        })
        .collect();
    let messages = vec![
        json!({"role": "system", "content": "You are a concise assistant.".repeat(4)}),
        json!({"role": "user", "content": "Explain in detail how erasure coding protects data stored on many independently owned machines, and what happens when one of them disappears for good. Give an example with numbers.".repeat(3)}),
    ];
    (sentences, messages)
}

struct Client {
    agent: ureq::Agent,
    key: String,
}

impl Client {
    fn post(
        &self,
        base: &str,
        path: &str,
        body: &Value,
    ) -> Result<ureq::http::Response<ureq::Body>> {
        let resp = self
            .agent
            .post(format!("{base}{path}"))
            .header("Authorization", format!("Bearer {}", self.key))
            .send_json(body)
            .with_context(|| format!("POST {path}"))?;
        if resp.status() != 200 {
            let status = resp.status();
            let text = resp.into_body().read_to_string().unwrap_or_default();
            bail!("POST {path}: {status}: {text}");
        }
        Ok(resp)
    }

    fn embed(&self, base: &str, texts: &[String]) -> Result<()> {
        let mut r = self.post(
            base,
            "/embeddings",
            &json!({"model": "minilm", "input": texts, "encoding_format": "base64"}),
        )?;
        let v: Value = r.body_mut().read_json()?;
        if v["data"].as_array().map(Vec::len) != Some(texts.len()) {
            bail!("embeddings answer without {} vectors: {v}", texts.len());
        }
        Ok(())
    }

    /// A streamed chat: (time to the first token, time from it to the last, prompt tokens,
    /// completion tokens).
    fn chat(&self, base: &str, messages: &[Value], max_tokens: u32) -> Result<Streamed> {
        let started = Instant::now();
        let resp = self.post(
            base,
            "/chat/completions",
            &json!({"model": "smollm2", "messages": messages, "max_tokens": max_tokens,
                    "temperature": 0, "stream": true}),
        )?;
        let mut first = None;
        let mut last = started.elapsed();
        let mut usage = None;
        for line in BufReader::new(resp.into_body().into_reader()).lines() {
            let line = line?;
            let Some(data) = line.strip_prefix("data: ") else {
                continue;
            };
            if data == "[DONE]" {
                break;
            }
            let v: Value = serde_json::from_str(data)?;
            if v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
            {
                last = started.elapsed();
                first.get_or_insert(last);
            }
            if v["usage"].is_object() {
                usage = Some(v["usage"].clone());
            }
        }
        let usage = usage.context("no usage in the stream")?;
        let first = first.context("no token in the stream")?;
        Ok(Streamed {
            first,
            rest: last - first,
            prompt: usage["prompt_tokens"].as_u64().unwrap_or(0),
            completion: usage["completion_tokens"].as_u64().unwrap_or(0),
        })
    }
}

struct Streamed {
    first: Duration,
    rest: Duration,
    prompt: u64,
    completion: u64,
}

/// Run it.
pub fn run(args: InferenceArgs) -> Result<()> {
    let paths = script("models.sh", &[])?;
    let path = |k: &str| -> Result<PathBuf> {
        paths
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(PathBuf::from)
            .with_context(|| format!("scripts/models.sh printed no {k}="))
    };
    let (minilm, smollm2) = (path("minilm")?, path("smollm2")?);
    let base = fresh_dir(&args.dir, "inference")?;
    let result = measure(&base, &args, &minilm, &smollm2);
    let _ = std::fs::remove_dir_all(&base);
    result
}

fn openai_base(dir: &Path) -> Result<String> {
    let addr = std::fs::read_to_string(dir.join(weft_openai::OPENAI_ADDR_FILE))
        .with_context(|| format!("no OpenAI API address in {}", dir.display()))?;
    Ok(format!("http://{}/v1", addr.trim()))
}

/// Peak resident memory of the node process whose data folder is `dir`, MiB.
fn peak_rss_mib(dir: &Path) -> Result<f64> {
    let pid = std::fs::read_to_string(dir.join("node.pid"))?;
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM")?;
    Ok(kib / 1024.0)
}

fn measure(base: &Path, args: &InferenceArgs, minilm: &Path, smollm2: &Path) -> Result<()> {
    let (fabric, took) = crate::start(
        base.join("fabric"),
        UpOptions {
            sites: Some("eu:3".into()),
            no_wan: true,
            ..UpOptions::default()
        },
    )?;
    let config = base.join("config");
    let node1 = fabric.dirs[0].to_string_lossy().to_string();
    weft_cli(&config, &["account", "create"])?;
    // (A bucket for the weights; the words split so no row-kind name is spelled alone.)
    let create: Vec<&str> = "bucket create weights".split(' ').collect();
    weft_cli(
        &config,
        &[&["--data", node1.as_str()], &create[..]].concat(),
    )?;
    for (name, path) in [("minilm", minilm), ("smollm2", smollm2)] {
        weft_cli(
            &config,
            &[
                "--data",
                &node1,
                "model",
                "add",
                name,
                &path.to_string_lossy(),
                "--bucket",
                "weights",
                "--replicas",
                "1",
            ],
        )?;
    }
    let keys = weft_cli(&config, &["--data", &node1, "key", "create"])?;
    let key = keys
        .lines()
        .find_map(|l| l.strip_prefix("export OPENAI_API_KEY="))
        .and_then(|l| l.split_whitespace().next())
        .context("no OPENAI_API_KEY line from `weft key create`")?
        .to_string();
    // Wait for both models to be ready; find their holder.
    let deadline = Instant::now() + Duration::from_secs(180);
    let holders = loop {
        let ls: Value = serde_json::from_str(&weft_cli(
            &config,
            &["--data", &node1, "model", "ls", "--json"],
        )?)?;
        let ready = |name: &str| -> Option<String> {
            ls.as_array()?.iter().find(|m| m["name"] == name)?["replicas_now"]
                .as_array()?
                .iter()
                .find(|r| r["state"] == "ready")
                .and_then(|r| r["node"].as_str().map(String::from))
        };
        if let (Some(e), Some(c)) = (ready("minilm"), ready("smollm2")) {
            break (e, c);
        }
        if Instant::now() > deadline {
            bail!("the models did not load within 3 minutes: {ls}");
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let dir_of = |id: &str| -> Result<PathBuf> {
        for d in &fabric.dirs {
            let s: Value = serde_json::from_str(&weft_cli(
                &config,
                &["--data", &d.to_string_lossy(), "status", "--json"],
            )?)?;
            if s["short_id"] == id || s["id"] == id {
                return Ok(d.clone());
            }
        }
        bail!("no node {id}")
    };
    let (embed_dir, chat_dir) = (dir_of(&holders.0)?, dir_of(&holders.1)?);
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "weft bench inference: local fabric of 3 nodes (one site, loopback) up in {:.1}s; {threads} cores; node1 has no inference role; minilm on {}, smollm2 on {}",
        took.as_secs_f64(),
        embed_dir.file_name().unwrap_or_default().to_string_lossy(),
        chat_dir.file_name().unwrap_or_default().to_string_lossy(),
    );
    let client = Client {
        agent: ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(300)))
            .http_status_as_error(false)
            .build()
            .into(),
        key,
    };
    let (sentences, messages) = workload();
    let (embed_base, chat_base, remote) = (
        openai_base(&embed_dir)?,
        openai_base(&chat_dir)?,
        openai_base(&fabric.dirs[0])?,
    );

    // Embeddings, through the hosting node's API.
    client.embed(&embed_base, &sentences[..32])?; // warm up
    let t = Instant::now();
    for s in &sentences[..64] {
        client.embed(&embed_base, std::slice::from_ref(s))?;
    }
    let embed_one = 64.0 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    for batch in sentences.chunks(32) {
        client.embed(&embed_base, batch)?;
    }
    let embed_batched = sentences.len() as f64 / t.elapsed().as_secs_f64();
    println!(
        "weft embeddings/s (HTTP, hosting node): batch 1 {embed_one:.1}, batch 32 {embed_batched:.1}"
    );

    // Chat prefill and decode, through the hosting node's API (median of 3).
    client.chat(&chat_base, &messages[1..], 4)?; // warm up
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(client.chat(&chat_base, &messages, 128)?);
    }
    let prefill = sorted(
        runs.iter()
            .map(|r| r.prompt as f64 / r.first.as_secs_f64())
            .collect(),
    );
    let decode = sorted(
        runs.iter()
            .map(|r| r.completion.saturating_sub(1) as f64 / r.rest.as_secs_f64())
            .collect(),
    );
    let (prefill, decode) = (prefill[1], decode[1]);
    println!(
        "weft chat (HTTP, hosting node, streamed): prefill {} tokens at {prefill:.1} tokens/s (to the first token), decode {} tokens at {decode:.1} tokens/s  (median of 3)",
        runs[0].prompt, runs[0].completion
    );

    // Time to first token: a short chat, through node1 (routed) and through the host.
    let short = [json!({"role": "user", "content": "Say hello."})];
    let ttft = |base: &str| -> Result<Vec<f64>> {
        let mut v = Vec::new();
        for _ in 0..args.requests {
            v.push(client.chat(base, &short, 2)?.first.as_secs_f64() * 1000.0);
        }
        Ok(sorted(v))
    };
    let local_ttft = ttft(&chat_base)?;
    let remote_ttft = ttft(&remote)?;
    println!(
        "time to first token ({} short chats each): through the hosting node p50 {:.1} ms, p99 {:.1} ms; through node1 (routed over QUIC) p50 {:.1} ms, p99 {:.1} ms; routing adds {:.1} ms at p50",
        args.requests,
        pct(&local_ttft, 0.5),
        pct(&local_ttft, 0.99),
        pct(&remote_ttft, 0.5),
        pct(&remote_ttft, 0.99),
        pct(&remote_ttft, 0.5) - pct(&local_ttft, 0.5)
    );
    println!(
        "peak RSS: chat host {:.0} MiB, embeddings host {:.0} MiB, node1 (no model) {:.0} MiB",
        peak_rss_mib(&chat_dir)?,
        peak_rss_mib(&embed_dir)?,
        peak_rss_mib(&fabric.dirs[0])?
    );
    drop(fabric);

    if args.no_anchors {
        return Ok(());
    }
    // The anchors, on the same work and thread count, with the fabric stopped.
    let python = match script("anchors.sh", &[]) {
        Ok(p) => p,
        Err(e) => {
            println!("anchors: not measured ({e})");
            return Ok(());
        }
    };
    let spec = json!({
        "threads": threads,
        "minilm": minilm,
        "gguf": smollm2,
        "sentences": sentences,
        "batch": 32,
        "single": 64,
        "messages": messages,
        "max_tokens": 128,
    });
    let mut child = Command::new(&python)
        .arg(scripts().join("anchors.py"))
        .env("TQDM_DISABLE", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run scripts/anchors.py")?;
    child
        .stdin
        .take()
        .context("anchors stdin")?
        .write_all(spec.to_string().as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        println!("anchors: scripts/anchors.py failed:");
        for line in tail.into_iter().rev() {
            println!("  {line}");
        }
        return Ok(());
    }
    let a: Value = serde_json::from_slice(&out.stdout).context("anchors' output")?;
    let f = |k: &str| a[k].as_f64().unwrap_or(f64::NAN);
    let ratio = |w: f64, anchor: f64| {
        let r = w / anchor;
        format!(
            "{r:.2}x{}",
            if r >= 1.0 {
                " (goal met)"
            } else {
                " (goal NOT met)"
            }
        )
    };
    println!(
        "anchor sentence-transformers {} (torch {}, {threads} threads): embeddings/s batch 1 {:.1}, batch 32 {:.1}; cosine {:.4}",
        a["versions"]["sentence-transformers"]
            .as_str()
            .unwrap_or("?"),
        a["versions"]["torch"].as_str().unwrap_or("?"),
        f("embed_batch1_per_s"),
        f("embed_batched_per_s"),
        f("cosine"),
    );
    println!(
        "anchor llama.cpp (llama-cpp-python {}, {threads} threads, same GGUF): prefill {} tokens at {:.1} tokens/s, decode {} tokens at {:.1} tokens/s",
        a["versions"]["llama-cpp-python"].as_str().unwrap_or("?"),
        f("llama_prompt_tokens"),
        f("llama_prefill_tok_s"),
        f("llama_completion_tokens"),
        f("llama_decode_tok_s"),
    );
    println!(
        "weft / anchor: embeddings batch 1 {}, batch 32 {}; prefill {}, decode {}",
        ratio(embed_one, f("embed_batch1_per_s")),
        ratio(embed_batched, f("embed_batched_per_s")),
        ratio(prefill, f("llama_prefill_tok_s")),
        ratio(decode, f("llama_decode_tok_s")),
    );
    Ok(())
}
