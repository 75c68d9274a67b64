//! Text generation with a quantized llama-architecture model from one GGUF file.

use crate::stream::TextStream;
use crate::template::ChatTemplate;
use crate::tokenizer::ChatTokenizer;
use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, TensorInfo};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use candle_transformers::generation::{LogitsProcessor, Sampling};
use candle_transformers::models::quantized_llama::{MAX_SEQ_LEN, ModelWeights};
use std::collections::HashMap;
use std::io::Cursor;
use std::ops::ControlFlow;
use std::path::Path;
use std::time::{Duration, Instant};

/// Who wrote a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Instructions framing the conversation.
    System,
    /// The person asking.
    User,
    /// The model.
    Assistant,
}

impl Role {
    /// The role's name in the prompt (`system`, `user`, `assistant`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its author.
    pub role: Role,
    /// Its text.
    pub content: String,
}

impl Message {
    /// A message from `role`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Message {
            role,
            content: content.into(),
        }
    }
}

/// How to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Softmax temperature; 0 picks the most likely token every time (greedy).
    pub temperature: f64,
    /// Nucleus sampling: draw only from the most likely tokens whose probabilities add up to
    /// `top_p` (1 = all tokens). Ignored when greedy.
    pub top_p: f64,
    /// Generation ends before the first of these strings; it is not part of the text.
    pub stop: Vec<String>,
    /// Seed of the sampler: the same seed, prompt and parameters give the same text.
    pub seed: u64,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            stop: Vec::new(),
            seed: 0,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// The model ended its turn, or a stop string was reached.
    Stop,
    /// `max_tokens` were generated, or the context is full.
    Length,
    /// The streaming callback asked to stop.
    Cancelled,
}

/// Where the time of a generation went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timings {
    /// Reading the prompt (one forward pass over all its tokens).
    pub prefill: Duration,
    /// Generating the completion, token by token (sampling included).
    pub decode: Duration,
}

/// The result of a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    /// The generated text (without the end-of-turn token or the stop string).
    pub text: String,
    /// Tokens of the prompt as rendered (template included).
    pub prompt_tokens: usize,
    /// Tokens generated, the end-of-turn token not counted.
    pub completion_tokens: usize,
    /// Why it ended.
    pub finish: FinishReason,
    /// Where the time went.
    pub timings: Timings,
}

/// What to do with the GGUF's Q4_1 matrices, which candle multiplies with a scalar loop only.
///
/// Measured on SmolLM2-135M (2 cores, `examples/speed.rs`), decode / prefill tokens per
/// second: `Keep` 13–16 / 18–20, `Q8_0` 50–60 / 130, `F32` 23–26 / 250–320. Decode dominates
/// a chat answer, so [`ChatModel::load`] uses `Q8_0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Q4_1Weights {
    /// Keep them as they are (smallest; slowest on CPU).
    Keep,
    /// Re-quantize them to Q8_0 at load (about 1.7× the memory; candle has SIMD for Q8_0).
    Q8_0,
    /// Dequantize them to f32 at load (about 6× the memory; plain float matmul).
    F32,
}

/// A loaded chat model: weights, tokenizer and chat template. Generation takes `&mut self`
/// (the model keeps its attention cache), so one request runs at a time per instance.
pub struct ChatModel {
    model: ModelWeights,
    tokenizer: ChatTokenizer,
    template: ChatTemplate,
    context: usize,
    device: Device,
}

impl ChatModel {
    /// Loads a GGUF chat model, converting Q4_1 matrices the way measured fastest
    /// ([`Q4_1Weights::Q8_0`]).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, Q4_1Weights::Q8_0)
    }

    /// Loads a GGUF chat model, choosing what becomes of its Q4_1 matrices.
    pub fn load_with(path: &Path, q4_1: Q4_1Weights) -> Result<Self> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let gguf = Content::read(&mut file).map_err(|e| Error::model(path, e))?;
        let arch = gguf
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map(String::as_str);
        if arch != Some("llama") {
            return Err(Error::model(
                path,
                format!("architecture {arch:?} is not supported (only llama)"),
            ));
        }
        let tokenizer = ChatTokenizer::from_gguf(&gguf, path)?;
        let template = match gguf.metadata.get("tokenizer.chat_template") {
            Some(v) => ChatTemplate::from_jinja(v.to_string()?).ok_or_else(|| {
                Error::model(
                    path,
                    "the chat template is not ChatML, which is all we render",
                )
            })?,
            None => ChatTemplate::chatml(),
        };
        let trained = gguf
            .metadata
            .get("llama.context_length")
            .and_then(|v| v.to_u32().ok())
            .map_or(MAX_SEQ_LEN, |n| n as usize);
        let device = Device::Cpu;
        let has_q4_1 = gguf
            .tensor_infos
            .values()
            .any(|t| t.ggml_dtype == GgmlDType::Q4_1);
        let model = if q4_1 == Q4_1Weights::Keep || !has_q4_1 {
            ModelWeights::from_gguf(gguf, &mut file, &device)
        } else {
            let target = match q4_1 {
                Q4_1Weights::F32 => GgmlDType::F32,
                _ => GgmlDType::Q8_0,
            };
            let (gguf, data) = convert_q4_1(gguf, &mut file, target, &device)?;
            ModelWeights::from_gguf(gguf, &mut Cursor::new(data), &device)
        }
        .map_err(|e| Error::model(path, e))?;
        Ok(ChatModel {
            model,
            tokenizer,
            template,
            context: trained.min(MAX_SEQ_LEN),
            device,
        })
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &ChatTokenizer {
        &self.tokenizer
    }

    /// The chat template.
    pub fn template(&self) -> &ChatTemplate {
        &self.template
    }

    /// Most tokens a prompt and its completion can hold together.
    pub fn context_length(&self) -> usize {
        self.context
    }

    /// Answers a conversation as the assistant.
    pub fn chat(&mut self, messages: &[Message], params: &GenerateParams) -> Result<Generation> {
        self.chat_stream(messages, params, |_| ControlFlow::Continue(()))
    }

    /// [`ChatModel::chat`], handing each piece of text to `on_piece` as soon as it is final:
    /// pieces are whole UTF-8 characters and never part of a stop string, and together they
    /// are the returned text. `on_piece` returning `Break` ends the generation
    /// ([`FinishReason::Cancelled`]).
    pub fn chat_stream(
        &mut self,
        messages: &[Message],
        params: &GenerateParams,
        on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        if messages.is_empty() {
            return Err(Error::Invalid("a chat needs at least one message".into()));
        }
        let prompt = self.template.render(messages);
        self.complete_stream(&prompt, params, on_piece)
    }

    /// Continues a raw prompt (no template). Special tokens written in it are honoured.
    pub fn complete(&mut self, prompt: &str, params: &GenerateParams) -> Result<Generation> {
        self.complete_stream(prompt, params, |_| ControlFlow::Continue(()))
    }

    /// [`ChatModel::complete`], streaming as [`ChatModel::chat_stream`] does.
    pub fn complete_stream(
        &mut self,
        prompt: &str,
        params: &GenerateParams,
        mut on_piece: impl FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let ids = self.tokenizer.encode(prompt)?;
        self.generate(&ids, params, &mut on_piece)
    }

    fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_piece: &mut dyn FnMut(&str) -> ControlFlow<()>,
    ) -> Result<Generation> {
        let sampling = sampling(params)?;
        if prompt.is_empty() {
            return Err(Error::Invalid("the prompt is empty".into()));
        }
        if prompt.len() >= self.context {
            return Err(Error::ContextLength {
                prompt: prompt.len(),
                context: self.context,
            });
        }
        let mut sampler = LogitsProcessor::from_sampling(params.seed, sampling);
        let mut text = TextStream::new(&params.stop);
        let mut completion = 0;

        let started = Instant::now();
        self.model.clear_kv_cache();
        let input = Tensor::new(prompt, &self.device)?.unsqueeze(0)?;
        let mut logits = self.model.forward(&input, 0)?;
        let prefill = started.elapsed();

        let started = Instant::now();
        let mut position = prompt.len();
        let finish = loop {
            if completion == params.max_tokens || position >= self.context {
                break FinishReason::Length;
            }
            let token = sampler.sample(&logits.squeeze(0)?)?;
            if self.tokenizer.is_stop(token) {
                break FinishReason::Stop;
            }
            completion += 1;
            let step = text.push(self.tokenizer.token_bytes(token));
            let stopped = step.stopped;
            if !step.piece.is_empty() && on_piece(step.piece).is_break() {
                break FinishReason::Cancelled;
            }
            if stopped {
                break FinishReason::Stop;
            }
            let input = Tensor::new(&[token], &self.device)?.unsqueeze(0)?;
            logits = self.model.forward(&input, position)?;
            position += 1;
        };
        if finish != FinishReason::Cancelled {
            let step = text.finish();
            if !step.piece.is_empty() {
                // Nothing follows the last piece, so there is nothing left to cancel.
                let _ = on_piece(step.piece);
            }
        }
        Ok(Generation {
            text: text.text().to_string(),
            prompt_tokens: prompt.len(),
            completion_tokens: completion,
            finish,
            timings: Timings {
                prefill,
                decode: started.elapsed(),
            },
        })
    }
}

/// The sampler for `params`, after checking them.
fn sampling(params: &GenerateParams) -> Result<Sampling> {
    let GenerateParams {
        temperature, top_p, ..
    } = *params;
    if !(temperature.is_finite() && temperature >= 0.0) {
        return Err(Error::Invalid(format!(
            "temperature {temperature} is not a number ≥ 0"
        )));
    }
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(Error::Invalid(format!("top_p {top_p} is not in (0, 1]")));
    }
    Ok(if temperature == 0.0 {
        Sampling::ArgMax
    } else if top_p < 1.0 {
        Sampling::TopP {
            p: top_p,
            temperature,
        }
    } else {
        Sampling::All { temperature }
    })
}

/// Reads every tensor of `gguf`, converting the Q4_1 ones to `target`, into one buffer laid out
/// like a GGUF's tensor data; returns the metadata pointing into that buffer.
fn convert_q4_1(
    gguf: Content,
    file: &mut std::fs::File,
    target: GgmlDType,
    device: &Device,
) -> candle_core::Result<(Content, Vec<u8>)> {
    const ALIGN: usize = 32;
    let mut data = Vec::new();
    let mut infos = HashMap::with_capacity(gguf.tensor_infos.len());
    for name in gguf.tensor_infos.keys() {
        let tensor = gguf.tensor(file, name, device)?;
        let tensor = if tensor.dtype() == GgmlDType::Q4_1 {
            QTensor::quantize(&tensor.dequantize(device)?, target)?
        } else {
            tensor
        };
        data.resize(data.len().next_multiple_of(ALIGN), 0);
        infos.insert(
            name.clone(),
            TensorInfo {
                ggml_dtype: tensor.dtype(),
                shape: tensor.shape().clone(),
                offset: data.len() as u64,
            },
        );
        data.extend_from_slice(&tensor.data()?);
    }
    let gguf = Content {
        tensor_infos: infos,
        tensor_data_offset: 0,
        ..gguf
    };
    Ok((gguf, data))
}
