//! The `INFER` stream between an entry and a replica: one [`Request`], then [`Frame`]s —
//! `Admitted` | `Busy` | `Refused`, then `Piece`s and `Done`, or `Embedded`, or `Failed` /
//! `TooLong`. Frames are postcard enums: a variant is only ever added at the end, so an older
//! node reads every frame it knows.

use serde::{Deserialize, Serialize};
use weft_core::NodeId;

use crate::ModelKind;
use crate::route::Allowed;

/// The largest request (prompt, inputs) the protocol carries.
pub(crate) const MAX_REQUEST: usize = 16 << 20;
/// The largest frame of an answer (a batch of embeddings).
pub(crate) const MAX_FRAME: usize = 64 << 20;

/// Sampling parameters of a generation (see `weft_infer::GenerateParams`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Params {
    /// Most tokens to generate (None: until the model ends its turn or the context is full).
    pub max_tokens: Option<u32>,
    /// Softmax temperature (0: greedy).
    pub temperature: f64,
    /// Nucleus sampling mass.
    pub top_p: f64,
    /// Stop strings.
    pub stop: Vec<String>,
    /// Sampler seed.
    pub seed: u64,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_tokens: None,
            temperature: 1.0,
            top_p: 1.0,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

/// The author of a chat message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatRole {
    /// Instructions.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

/// What to compute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Work {
    /// Sentence embeddings of each input.
    Embed {
        /// The texts.
        inputs: Vec<String>,
    },
    /// The assistant's next message of a conversation.
    Chat {
        /// The conversation.
        messages: Vec<(ChatRole, String)>,
        /// How to sample.
        params: Params,
    },
    /// The continuation of a raw prompt.
    Complete {
        /// The prompt.
        prompt: String,
        /// How to sample.
        params: Params,
    },
}

impl Work {
    /// The kind of model that does it.
    pub fn kind(&self) -> ModelKind {
        match self {
            Work::Embed { .. } => ModelKind::Embeddings,
            Work::Chat { .. } | Work::Complete { .. } => ModelKind::Chat,
        }
    }
}

/// A request for a model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// The model's name.
    pub model: String,
    /// What to compute.
    pub work: Work,
    /// Where it may run.
    pub allowed: Allowed,
    /// The account the request is for (as the node it reached states it: what the replica's
    /// receipt names).
    pub account: NodeId,
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Finish {
    /// End of turn or a stop string.
    Stop,
    /// `max_tokens`, or the context is full.
    Length,
    /// The caller went away.
    Cancelled,
}

/// Why a replica did not take a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Refusal {
    /// It does not hold the model loaded (any more).
    NotHere,
    /// It is not where the request may run.
    NotAllowed,
}

/// One message of an answer, replica to entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    /// Taken: `queued` other requests are ahead of it (waiting or running); it takes at most
    /// `capacity`.
    Admitted {
        /// Requests ahead of this one.
        queued: u32,
        /// The most it takes.
        capacity: u32,
    },
    /// Full: come back in `retry_after` seconds.
    Busy {
        /// Seconds.
        retry_after: u32,
    },
    /// Not taken, and why.
    Refused {
        /// Why.
        why: Refusal,
        /// For logs.
        message: String,
    },
    /// The next piece of generated text.
    Piece(String),
    /// The embeddings, with the number of tokens read.
    Embedded {
        /// One vector per input.
        vectors: Vec<Vec<f32>>,
        /// Tokens read.
        tokens: u32,
    },
    /// The generation ended.
    Done {
        /// Why.
        finish: Finish,
        /// Tokens of the prompt.
        prompt_tokens: u32,
        /// Tokens generated.
        completion_tokens: u32,
    },
    /// It failed; `invalid`: because of the request itself (no other replica would do better).
    Failed {
        /// The request's fault.
        invalid: bool,
        /// Why.
        message: String,
    },
    /// The prompt does not fit the model's context (the request's fault).
    TooLong {
        /// Tokens of the prompt.
        prompt_tokens: u32,
        /// Tokens the context holds.
        context: u32,
    },
}
