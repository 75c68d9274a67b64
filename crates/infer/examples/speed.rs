//! How fast the engine is on this machine:
//! `cargo run --release -p weft-infer --example speed [keep|q8_0|f32 …]`.
//!
//! Prints embeddings per second at batch 1 and 32, then for each way of holding the chat
//! model's Q4_1 matrices (all three unless named) its load time, prefill and decode tokens per
//! second. The models come from `scripts/models.sh`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;
use weft_infer::{ChatModel, Embedder, GenerateParams, Message, Q4_1Weights, Role};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let models = common::models();
    let chosen: Vec<String> = std::env::args().skip(1).collect();

    let embedder = Embedder::load(&models.minilm)?;
    let sentences: Vec<String> = (0..256)
        .map(|i| {
            format!(
                "Sentence number {i} is about storing objects on node {}.",
                i % 7
            )
        })
        .collect();
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    embedder.embed(&texts[..32])?; // warm up
    let started = Instant::now();
    for text in &texts[..64] {
        embedder.embed(&[text])?;
    }
    let one = 64.0 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    for batch in texts.chunks(32) {
        embedder.embed(batch)?;
    }
    let batched = 256.0 / started.elapsed().as_secs_f64();
    println!("embeddings/s: batch 1 {one:.1}, batch 32 {batched:.1}");

    let prompt = [
        Message::new(Role::System, "You are a concise assistant.".repeat(4)),
        Message::new(
            Role::User,
            "Explain in detail how erasure coding protects data stored on many independently \
             owned machines, and what happens when one of them disappears for good. \
             Give an example with numbers."
                .repeat(3),
        ),
    ];
    let params = GenerateParams {
        max_tokens: 128,
        stop: Vec::new(),
        ..GenerateParams::default()
    };
    for (name, q4_1) in [
        ("keep", Q4_1Weights::Keep),
        ("q8_0", Q4_1Weights::Q8_0),
        ("f32", Q4_1Weights::F32),
    ] {
        if !chosen.is_empty() && !chosen.iter().any(|c| c == name) {
            continue;
        }
        let started = Instant::now();
        let mut model = ChatModel::load_with(&models.smollm2, q4_1)?;
        let load = started.elapsed();
        model.chat(
            &prompt[1..],
            &GenerateParams {
                max_tokens: 4,
                ..params.clone()
            },
        )?; // warm up
        let out = model.chat(&prompt, &params)?;
        println!(
            "chat ({name}): load {:.2}s, prefill {} tokens at {:.1} tokens/s, decode {} tokens at {:.1} tokens/s",
            load.as_secs_f64(),
            out.prompt_tokens,
            out.prompt_tokens as f64 / out.timings.prefill.as_secs_f64(),
            out.completion_tokens,
            out.completion_tokens as f64 / out.timings.decode.as_secs_f64(),
        );
    }
    Ok(())
}
