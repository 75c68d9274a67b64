//! Why a request for a model got no answer: structured, so each front end maps it to its own
//! codes in one place (the OpenAI API: 404, 400 with `context_length_exceeded`, 503, 429, 502).

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum InferenceError {
    /// There is no such model.
    #[error("the model `{0}` does not exist (GET /v1/models lists the models)")]
    UnknownModel(String),
    /// The request cannot be answered as asked.
    #[error("{0}")]
    Invalid(String),
    /// The prompt does not fit the model's context.
    #[error("the prompt is {prompt_tokens} tokens; the context holds {context}")]
    ContextLength {
        /// Tokens of the prompt.
        prompt_tokens: u32,
        /// Tokens the context holds.
        context: u32,
    },
    /// No replica can take it where it may run.
    #[error("{0}")]
    Unavailable(String),
    /// Every replica where it may run is full.
    #[error("every replica of `{model}` is busy; retry after {retry_after} s")]
    Busy {
        /// The model.
        model: String,
        /// Seconds.
        retry_after: u32,
    },
    /// The replica failed after it had started answering.
    #[error("{0}")]
    Failed(String),
}
