//! weft's local inference engine: sentence embeddings and text generation on the CPU.
//!
//! It owns two models and everything between their files and their outputs: [`Embedder`]
//! (a BERT sentence encoder such as all-MiniLM-L6-v2, from a folder with `model.safetensors`,
//! `config.json` and `tokenizer.json`) and [`ChatModel`] (a llama-architecture model in one
//! GGUF file such as SmolLM2-135M-Instruct: weights, byte-level BPE tokenizer and ChatML chat
//! template all come from the file's metadata). Generation does sampling (temperature, top-p,
//! seed), stop strings, end-of-turn tokens, token counts and streaming of UTF-8-safe pieces.
//!
//! **What it must never know:** the network, the fabric, HTTP or the OpenAI wire format. Like a
//! codec, it takes text and parameters and returns text, vectors and counts; its only IO is
//! reading model files. The API layer maps requests onto it and owns the wire types.
//!
//! The tensor math is [candle](https://github.com/huggingface/candle) (pure Rust, no C/C++
//! toolchain) and the tokenizers are the `tokenizers` crate built without its C features. The
//! key trade-off is speed for portability: candle has no fast path for every GGUF
//! quantization — SmolLM2's Q4_1 matrices only have a scalar one — so [`ChatModel::load`]
//! converts them at load time ([`Q4_1Weights`]; the default was chosen by measurement with
//! `cargo run --release -p weft-infer --example speed`).

#![deny(missing_docs)]
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod chat;
mod embed;
mod stream;
mod template;
mod tokenizer;

pub use chat::{
    ChatModel, FinishReason, GenerateParams, Generation, Message, Q4_1Weights, Role, Timings,
};
pub use embed::{Embedder, Embeddings};
pub use template::ChatTemplate;
pub use tokenizer::ChatTokenizer;

use std::path::PathBuf;

/// Why loading a model or running it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model file could not be read.
    #[error("reading {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A model file was read but its content is not what the engine expects.
    #[error("model {path}: {message}")]
    Model {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer failed (building it, or encoding a text).
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A tensor operation failed.
    #[error("tensor computation: {0}")]
    Tensor(#[from] candle_core::Error),
    /// The request cannot be served as given (a bad parameter, an empty prompt).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The prompt does not fit the model's context.
    #[error("invalid request: the prompt is {prompt} tokens; the context holds {context}")]
    ContextLength {
        /// Tokens of the prompt.
        prompt: usize,
        /// Tokens the context holds.
        context: usize,
    },
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn model(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        Error::Model {
            path: path.into(),
            message: message.to_string(),
        }
    }

    fn tokenizer(e: impl std::fmt::Display) -> Self {
        Error::Tokenizer(e.to_string())
    }
}
