//! OpenAI's request bodies as this API reads them, and their checks. Answers are built as JSON
//! values where they are written ([`crate::api`]). Fields weft does not use (`user`,
//! `logit_bias`, `presence_penalty`, …) are accepted and ignored, as llama-server and Ollama do;
//! fields it cannot honour (`n` > 1, token-id inputs, other dimensions) are refused with a
//! message naming them.

use serde::Deserialize;
use serde_json::Value;
use weft_inference::{ChatRole, Params, Work};

use crate::error::ApiError;

/// At most this many inputs in one embeddings request (OpenAI's limit, which replicas enforce).
pub use weft_inference::MAX_INPUTS;
/// Completions' default `max_tokens` (OpenAI's).
const COMPLETION_DEFAULT_TOKENS: u32 = 16;
/// Chat's default `max_tokens`: a small model that never ends its turn would otherwise hold a
/// shared replica for the whole context (4096 tokens, a minute or more on a small CPU).
const CHAT_DEFAULT_TOKENS: u32 = 1024;

/// One text or several.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// A part of a message's content.
#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// A message's content: text, or parts of which only text is understood.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Text.
    Text(String),
    /// Parts.
    Parts(Vec<Part>),
}

/// One message of a chat.
#[derive(Debug, Deserialize)]
pub struct ChatMessage {
    role: String,
    #[serde(default)]
    content: Option<Content>,
}

/// Stream options.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a last chunk with the usage and no choices.
    #[serde(default)]
    pub include_usage: bool,
}

/// What chat and completion requests share: the model, streaming and sampling.
#[derive(Debug, Deserialize)]
pub struct Common {
    /// The model.
    pub model: String,
    /// Server-sent events.
    #[serde(default)]
    pub stream: bool,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    stop: Option<OneOrMany>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    n: Option<u32>,
}

impl Common {
    /// Whether a streamed answer ends with a usage-only chunk.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    fn params(&mut self, max_tokens: Option<u32>) -> Result<Params, ApiError> {
        params(
            max_tokens,
            self.temperature,
            self.top_p,
            self.stop.take(),
            self.seed,
            self.n,
        )
    }
}

/// A request for generated text: what the API needs of it before and after it is checked.
pub trait Generate: serde::de::DeserializeOwned {
    /// The shared fields.
    fn common(&self) -> &Common;
    /// The work it asks for, checked.
    fn work(self) -> Result<Work, ApiError>;
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(flatten)]
    common: Common,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    max_completion_tokens: Option<u32>,
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(flatten)]
    common: Common,
    prompt: OneOrMany,
    #[serde(default)]
    echo: bool,
    #[serde(default)]
    suffix: Option<String>,
}

/// `POST /v1/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingRequest {
    /// The model.
    pub model: String,
    input: Value,
    /// `float` (default) or `base64` (little-endian f32s).
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    dimensions: Option<u32>,
}

/// Parse a JSON body, a clear 400 if it is not the request.
pub fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::invalid(
            "the request has no body; send a JSON object (Content-Type: application/json)",
            None,
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::invalid(format!("the request body is not valid: {e}"), None))
}

fn params(
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    stop: Option<OneOrMany>,
    seed: Option<i64>,
    n: Option<u32>,
) -> Result<Params, ApiError> {
    if n.is_some_and(|n| n != 1) {
        return Err(ApiError::invalid(
            "only n = 1 is supported (ask again for another choice)",
            Some("n"),
        ));
    }
    let temperature = temperature.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(ApiError::invalid(
            format!("temperature {temperature} is not between 0 and 2"),
            Some("temperature"),
        ));
    }
    let top_p = top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            format!("top_p {top_p} is not in (0, 1]"),
            Some("top_p"),
        ));
    }
    if max_tokens == Some(0) {
        return Err(ApiError::invalid(
            "max_tokens must be at least 1",
            Some("max_tokens"),
        ));
    }
    let stop = stop.map(OneOrMany::into_vec).unwrap_or_default();
    if stop.len() > 4 || stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid(
            "stop takes up to 4 non-empty strings",
            Some("stop"),
        ));
    }
    let seed = match seed {
        Some(s) => s as u64,
        None => {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(|e| ApiError::internal(e.to_string()))?;
            u64::from_le_bytes(b)
        }
    };
    Ok(Params {
        max_tokens,
        temperature,
        top_p,
        stop,
        seed,
    })
}

impl ChatRequest {
    /// The conversation and the sampling parameters.
    pub fn conversation(mut self) -> Result<(Vec<(ChatRole, String)>, Params), ApiError> {
        if self.messages.is_empty() {
            return Err(ApiError::invalid(
                "messages is empty: a chat needs at least one message",
                Some("messages"),
            ));
        }
        let mut messages = Vec::with_capacity(self.messages.len());
        for (i, m) in std::mem::take(&mut self.messages).into_iter().enumerate() {
            let role = match m.role.as_str() {
                "system" | "developer" => ChatRole::System,
                "user" => ChatRole::User,
                "assistant" => ChatRole::Assistant,
                other => {
                    return Err(ApiError::invalid(
                        format!(
                            "messages[{i}].role {other:?} is not supported (system, developer, user or assistant)"
                        ),
                        Some("messages"),
                    ));
                }
            };
            let text = match m.content {
                None => String::new(),
                Some(Content::Text(t)) => t,
                Some(Content::Parts(parts)) => {
                    let mut text = String::new();
                    for p in parts {
                        match (p.kind.as_str(), p.text) {
                            ("text", Some(t)) => text.push_str(&t),
                            (kind, _) => {
                                return Err(ApiError::invalid(
                                    format!(
                                        "messages[{i}].content: parts of type {kind:?} are not supported (text only)"
                                    ),
                                    Some("messages"),
                                ));
                            }
                        }
                    }
                    text
                }
            };
            messages.push((role, text));
        }
        let max_tokens = Some(
            self.max_completion_tokens
                .or(self.common.max_tokens)
                .unwrap_or(CHAT_DEFAULT_TOKENS),
        );
        let params = self.common.params(max_tokens)?;
        Ok((messages, params))
    }
}

impl CompletionRequest {
    /// The prompt and the sampling parameters.
    pub fn prompt(mut self) -> Result<(String, Params), ApiError> {
        if self.echo {
            return Err(ApiError::invalid("echo is not supported", Some("echo")));
        }
        if self.suffix.is_some() {
            return Err(ApiError::invalid("suffix is not supported", Some("suffix")));
        }
        let mut prompts =
            std::mem::replace(&mut self.prompt, OneOrMany::Many(Vec::new())).into_vec();
        if prompts.len() != 1 {
            return Err(ApiError::invalid(
                "prompt must be one string (send one request per prompt)",
                Some("prompt"),
            ));
        }
        let prompt = prompts.remove(0);
        let max_tokens = Some(self.common.max_tokens.unwrap_or(COMPLETION_DEFAULT_TOKENS));
        let params = self.common.params(max_tokens)?;
        Ok((prompt, params))
    }
}

impl Generate for ChatRequest {
    fn common(&self) -> &Common {
        &self.common
    }

    fn work(self) -> Result<Work, ApiError> {
        let (messages, params) = self.conversation()?;
        Ok(Work::Chat { messages, params })
    }
}

impl Generate for CompletionRequest {
    fn common(&self) -> &Common {
        &self.common
    }

    fn work(self) -> Result<Work, ApiError> {
        let (prompt, params) = self.prompt()?;
        Ok(Work::Complete { prompt, params })
    }
}

impl EmbeddingRequest {
    /// The texts, checked; `dimension` is the model's.
    pub fn inputs(&self, dimension: Option<u32>) -> Result<Vec<String>, ApiError> {
        let bad = || {
            ApiError::invalid(
                "input must be a string or an array of strings (token-id inputs are not supported)",
                Some("input"),
            )
        };
        let inputs: Vec<String> = match &self.input {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
                .collect::<Result<_, _>>()?,
            _ => return Err(bad()),
        };
        if inputs.is_empty() {
            return Err(ApiError::invalid("input is empty", Some("input")));
        }
        if inputs.len() > MAX_INPUTS {
            return Err(ApiError::invalid(
                format!(
                    "input has {} items; at most {MAX_INPUTS} per request",
                    inputs.len()
                ),
                Some("input"),
            ));
        }
        if let Some(i) = inputs.iter().position(|s| s.is_empty()) {
            return Err(ApiError::invalid(
                format!("input[{i}] is empty"),
                Some("input"),
            ));
        }
        if let (Some(asked), Some(dim)) = (self.dimensions, dimension)
            && asked != dim
        {
            return Err(ApiError::invalid(
                format!("this model's embeddings have {dim} dimensions, not {asked}"),
                Some("dimensions"),
            ));
        }
        match self.encoding_format.as_deref() {
            None | Some("float") | Some("base64") => Ok(inputs),
            Some(other) => Err(ApiError::invalid(
                format!("encoding_format {other:?}: float or base64"),
                Some("encoding_format"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<(Vec<(ChatRole, String)>, Params), ApiError> {
        parse::<ChatRequest>(body.as_bytes())?.conversation()
    }

    #[test]
    fn chat_requests_map_roles_parts_and_parameters() {
        let (messages, params) = chat(
            r#"{"model": "m", "messages": [
                {"role": "developer", "content": "Be brief."},
                {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
                {"role": "assistant", "content": null}],
                "max_completion_tokens": 9, "max_tokens": 3, "temperature": 0, "top_p": 0.5,
                "stop": "END", "seed": 7, "user": "ignored", "presence_penalty": 0.1}"#,
        )
        .unwrap();
        assert_eq!(
            messages,
            vec![
                (ChatRole::System, "Be brief.".to_string()),
                (ChatRole::User, "Hi there".to_string()),
                (ChatRole::Assistant, String::new()),
            ]
        );
        assert_eq!(params.max_tokens, Some(9), "max_completion_tokens wins");
        assert_eq!(
            (params.temperature, params.top_p, params.seed),
            (0.0, 0.5, 7)
        );
        assert_eq!(params.stop, vec!["END".to_string()]);
        let (_, params) =
            chat(r#"{"model": "m", "messages": [{"role": "user", "content": "x"}]}"#).unwrap();
        assert_eq!(
            params.max_tokens,
            Some(CHAT_DEFAULT_TOKENS),
            "bounded by default"
        );
    }

    #[test]
    fn what_cannot_be_honoured_is_refused_by_name() {
        let refused = |body: &str, param: Option<&str>| {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST, "{body}");
            assert_eq!(e.param, param, "{body}: {}", e.message);
        };
        let base = r#""model": "m", "messages": [{"role": "user", "content": "x"}]"#;
        refused(&format!("{{{base}, \"n\": 2}}"), Some("n"));
        refused(
            &format!("{{{base}, \"temperature\": 3}}"),
            Some("temperature"),
        );
        refused(&format!("{{{base}, \"top_p\": 0}}"), Some("top_p"));
        refused(
            &format!("{{{base}, \"max_tokens\": 0}}"),
            Some("max_tokens"),
        );
        refused(
            &format!("{{{base}, \"stop\": [\"a\",\"b\",\"c\",\"d\",\"e\"]}}"),
            Some("stop"),
        );
        refused(r#"{"model": "m", "messages": []}"#, Some("messages"));
        refused(
            r#"{"model": "m", "messages": [{"role": "tool", "content": "x"}]}"#,
            Some("messages"),
        );
        refused(
            r#"{"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}"#,
            Some("messages"),
        );
        refused(r#"{"model": "m"}"#, None);
        refused("not json", None);
        refused("", None);
    }

    #[test]
    fn embedding_inputs_are_strings_within_limits() {
        let inputs = |body: &str, dim: Option<u32>| {
            parse::<EmbeddingRequest>(body.as_bytes()).and_then(|r| r.inputs(dim))
        };
        assert_eq!(
            inputs(r#"{"model": "e", "input": "one"}"#, None).unwrap(),
            vec!["one".to_string()]
        );
        assert_eq!(
            inputs(
                r#"{"model": "e", "input": ["a", "b"], "encoding_format": "base64"}"#,
                None
            )
            .unwrap()
            .len(),
            2
        );
        for bad in [
            r#"{"model": "e", "input": [1, 2, 3]}"#,
            r#"{"model": "e", "input": []}"#,
            r#"{"model": "e", "input": ["a", ""]}"#,
            r#"{"model": "e", "input": "a", "encoding_format": "int8"}"#,
        ] {
            assert!(inputs(bad, None).is_err(), "{bad}");
        }
        let many = serde_json::json!({"model": "e", "input": vec!["x"; MAX_INPUTS + 1]});
        assert!(inputs(&many.to_string(), None).is_err());
        assert!(
            inputs(
                r#"{"model": "e", "input": "a", "dimensions": 384}"#,
                Some(384)
            )
            .is_ok()
        );
        assert!(
            inputs(
                r#"{"model": "e", "input": "a", "dimensions": 100}"#,
                Some(384)
            )
            .is_err()
        );
    }

    #[test]
    fn completions_default_to_sixteen_tokens_and_one_prompt() {
        let (prompt, params) = parse::<CompletionRequest>(br#"{"model": "c", "prompt": ["Hi"]}"#)
            .unwrap()
            .prompt()
            .unwrap();
        assert_eq!((prompt.as_str(), params.max_tokens), ("Hi", Some(16)));
        assert!(
            parse::<CompletionRequest>(br#"{"model": "c", "prompt": ["a", "b"]}"#)
                .unwrap()
                .prompt()
                .is_err()
        );
        assert!(
            parse::<CompletionRequest>(br#"{"model": "c", "prompt": "a", "echo": true}"#)
                .unwrap()
                .prompt()
                .is_err()
        );
    }
}
