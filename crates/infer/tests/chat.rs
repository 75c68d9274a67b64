//! Chat and completion with SmolLM2-135M-Instruct (Q4_1 GGUF).

mod common;

use std::ops::ControlFlow;
use std::sync::{Mutex, MutexGuard, OnceLock};
use weft_infer::{ChatModel, Error, FinishReason, GenerateParams, Generation, Message, Role};

/// One model for the whole file: generation needs `&mut`, so tests take turns.
fn model() -> MutexGuard<'static, ChatModel> {
    static MODEL: OnceLock<Mutex<ChatModel>> = OnceLock::new();
    MODEL
        .get_or_init(|| Mutex::new(ChatModel::load(&common::models().smollm2).expect("loads")))
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn ask(question: &str) -> Vec<Message> {
    vec![Message::new(Role::User, question)]
}

fn greedy(max_tokens: usize) -> GenerateParams {
    GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    }
}

#[test]
fn the_tokenizer_matches_the_model_and_round_trips() {
    let m = model();
    let t = m.tokenizer();
    assert_eq!(t.vocab_size(), 49152);
    assert_eq!(t.eos(), 2);
    // Ids from the Python `tokenizers` pipeline llama.cpp's `smollm` pre-tokenizer describes.
    let prompt = "<|im_start|>user\nWhat is 1234+56?<|im_end|>\n<|im_start|>assistant\n";
    let ids = t.encode(prompt).unwrap();
    assert_eq!(
        ids,
        [
            1, 4093, 198, 1780, 314, 216, 33, 34, 35, 36, 27, 37, 38, 47, 2, 198, 1, 520, 9531, 198
        ]
    );
    assert!(t.is_special(1) && t.is_special(2) && !t.is_special(4093));
    for text in [
        "Hello, world! 123 + 4.5e6",
        "Grüße 👋 — 日本語のテキスト",
        "  leading spaces\n\ttabs\r\n",
    ] {
        let ids = t.encode(text).unwrap();
        assert_eq!(t.decode(&ids), text);
    }
    // Special tokens are not text.
    assert_eq!(t.decode(&ids), "user\nWhat is 1234+56?\nassistant\n");
}

#[test]
fn greedy_answers_are_sensible_and_repeatable() {
    let mut m = model();
    let params = greedy(48);
    let messages = ask("What is 2+2?");
    let first = m.chat(&messages, &params).unwrap();
    let second = m.chat(&messages, &params).unwrap();
    assert_eq!(
        first,
        Generation {
            timings: first.timings,
            ..second.clone()
        }
    );
    assert!(first.text.contains('4'), "{:?}", first.text);
    assert!(!first.text.contains("<|im_end|>"));
    let prompt = m.template().render(&messages);
    assert_eq!(
        first.prompt_tokens,
        m.tokenizer().encode(&prompt).unwrap().len()
    );
    assert!(
        first.prompt_tokens > 20,
        "the default system prompt is in the prompt"
    );
    match first.finish {
        FinishReason::Stop => assert!(first.completion_tokens < 48),
        FinishReason::Length => assert_eq!(first.completion_tokens, 48),
        FinishReason::Cancelled => panic!("nobody cancelled"),
    }
    // Re-encoding the answer gives about as many tokens as were generated.
    let reencoded = m.tokenizer().encode(&first.text).unwrap().len();
    assert!(reencoded.abs_diff(first.completion_tokens) <= 2);
}

#[test]
fn max_tokens_is_respected() {
    let mut m = model();
    let out = m
        .chat(&ask("Write a long story about a dragon."), &greedy(5))
        .unwrap();
    assert_eq!(out.completion_tokens, 5);
    assert_eq!(out.finish, FinishReason::Length);
    assert!(!out.text.is_empty());
    let none = m.chat(&ask("Hi"), &greedy(0)).unwrap();
    assert_eq!((none.text.as_str(), none.completion_tokens), ("", 0));
}

#[test]
fn generation_ends_before_a_stop_string() {
    let mut m = model();
    let messages = ask("List three colours of the rainbow.");
    let full = m.chat(&messages, &greedy(40)).unwrap();
    // Stop at the third word of the unconstrained answer.
    let words: Vec<&str> = full.text.split_whitespace().collect();
    assert!(words.len() > 3, "{:?}", full.text);
    let stop = words[2].to_string();
    let at = full.text.find(&stop).unwrap();
    let params = GenerateParams {
        stop: vec!["no such text".into(), stop.clone()],
        ..greedy(40)
    };
    let cut = m.chat(&messages, &params).unwrap();
    assert_eq!(cut.text, full.text[..at], "stop {stop:?}");
    assert_eq!(cut.finish, FinishReason::Stop);
    assert!(cut.completion_tokens < full.completion_tokens);
}

#[test]
fn sampling_is_reproducible_by_seed() {
    let mut m = model();
    let messages = ask("Tell me something about cats.");
    let params = |seed| GenerateParams {
        max_tokens: 24,
        temperature: 0.8,
        top_p: 0.95,
        seed,
        ..GenerateParams::default()
    };
    let a = m.chat(&messages, &params(7)).unwrap();
    let b = m.chat(&messages, &params(7)).unwrap();
    assert_eq!(a.text, b.text);
    assert_eq!(a.completion_tokens, b.completion_tokens);
    let others: Vec<String> = (8..11)
        .map(|seed| m.chat(&messages, &params(seed)).unwrap().text)
        .collect();
    assert!(
        others.iter().any(|t| *t != a.text),
        "four seeds gave one text: {:?}",
        a.text
    );
}

#[test]
fn streamed_pieces_make_up_the_text() {
    let mut m = model();
    let messages = ask("Say hello in German and in Japanese.");
    let mut pieces = Vec::new();
    let streamed = m
        .chat_stream(&messages, &greedy(32), |piece| {
            pieces.push(piece.to_string());
            ControlFlow::Continue(())
        })
        .unwrap();
    assert!(pieces.len() > 1);
    assert!(pieces.iter().all(|p| !p.is_empty()));
    assert_eq!(pieces.concat(), streamed.text);
    assert_eq!(m.chat(&messages, &greedy(32)).unwrap().text, streamed.text);

    let mut first = None;
    let cancelled = m
        .chat_stream(&messages, &greedy(32), |piece| {
            first = Some(piece.to_string());
            ControlFlow::Break(())
        })
        .unwrap();
    assert_eq!(cancelled.finish, FinishReason::Cancelled);
    assert_eq!(Some(cancelled.text), first);
}

#[test]
fn a_raw_prompt_is_continued() {
    let mut m = model();
    let out = m.complete("The capital of France is", &greedy(8)).unwrap();
    assert_eq!(out.prompt_tokens, 5);
    assert!(out.completion_tokens > 0);
    assert!(out.text.contains("Paris"), "{:?}", out.text);
}

#[test]
fn bad_requests_are_refused() {
    let mut m = model();
    let bad = |params: GenerateParams| GenerateParams {
        max_tokens: 4,
        ..params
    };
    for params in [
        bad(GenerateParams {
            temperature: -1.0,
            ..Default::default()
        }),
        bad(GenerateParams {
            temperature: f64::NAN,
            ..Default::default()
        }),
        bad(GenerateParams {
            top_p: 0.0,
            ..Default::default()
        }),
    ] {
        assert!(matches!(m.complete("Hi", &params), Err(Error::Invalid(_))));
    }
    assert!(matches!(m.chat(&[], &greedy(4)), Err(Error::Invalid(_))));
    assert!(matches!(m.complete("", &greedy(4)), Err(Error::Invalid(_))));
    let huge = "word ".repeat(m.context_length());
    assert!(matches!(
        m.complete(&huge, &greedy(4)),
        Err(Error::ContextLength { context, .. }) if context == m.context_length()
    ));
    // The model still works after refusals.
    assert!(!m.complete("One, two,", &greedy(3)).unwrap().text.is_empty());
}
