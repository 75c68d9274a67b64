//! Sentence embeddings against all-MiniLM-L6-v2's reference values (sentence-transformers).

mod common;

use std::sync::OnceLock;
use weft_infer::Embedder;

const FOOD: &str = "A man is eating food.";
const BREAD: &str = "A man is eating a piece of bread.";

fn embedder() -> &'static Embedder {
    static EMBEDDER: OnceLock<Embedder> = OnceLock::new();
    EMBEDDER.get_or_init(|| Embedder::load(&common::models().minilm).expect("MiniLM loads"))
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn tokens_are_those_of_the_reference_tokenizer() {
    let e = embedder();
    assert_eq!(
        e.token_ids(FOOD).unwrap(),
        [101, 1037, 2158, 2003, 5983, 2833, 1012, 102]
    );
    assert_eq!(
        e.token_ids(BREAD).unwrap(),
        [
            101, 1037, 2158, 2003, 5983, 1037, 3538, 1997, 7852, 1012, 102
        ]
    );
}

#[test]
fn vectors_match_sentence_transformers() {
    let e = embedder();
    assert_eq!(e.dimension(), 384);
    let out = e.embed(&[FOOD, BREAD]).unwrap();
    assert_eq!(out.vectors.len(), 2);
    assert!(out.vectors.iter().all(|v| v.len() == 384));
    for v in &out.vectors {
        assert!((dot(v, v) - 1.0).abs() < 1e-5, "not unit length");
    }
    let reference = [0.033242, 0.004406, -0.006277, 0.048379, -0.138702];
    for (got, want) in out.vectors[0].iter().zip(reference) {
        assert!((got - want).abs() < 1e-3, "{:?}", &out.vectors[0][..5]);
    }
    let cosine = dot(&out.vectors[0], &out.vectors[1]);
    assert!((cosine - 0.755337).abs() < 1e-3, "cosine {cosine}");
    assert_eq!(out.token_counts, [8, 11]);
    assert_eq!(out.total_tokens(), 19);
}

#[test]
fn a_batch_gives_the_vectors_of_one_text_at_a_time() {
    let e = embedder();
    let long = "weft stores objects encrypted and erasure-coded across independently owned nodes. "
        .repeat(3);
    let texts = [
        FOOD,
        "Grüße aus Köln 👋",
        long.as_str(),
        "",
        BREAD,
        "The quick brown fox jumps over the lazy dog.",
    ];
    let batch = e.embed(&texts).unwrap();
    for (i, text) in texts.iter().enumerate() {
        let one = e.embed(&[text]).unwrap();
        assert_eq!(one.token_counts[0], batch.token_counts[i]);
        let worst = one.vectors[0]
            .iter()
            .zip(&batch.vectors[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "text {i} differs by {worst} in a batch");
    }
    // Unrelated texts are far apart, related ones close.
    assert!(dot(&batch.vectors[0], &batch.vectors[4]) > dot(&batch.vectors[0], &batch.vectors[2]));
}

#[test]
fn long_texts_are_truncated_to_256_tokens() {
    let text = "word ".repeat(1000);
    let out = embedder().embed(&[&text]).unwrap();
    assert_eq!(out.token_counts, [256]);
    assert_eq!(out.vectors[0].len(), 384);
    assert!(embedder().embed(&[]).unwrap().vectors.is_empty());
}
