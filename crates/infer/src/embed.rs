//! Sentence embeddings with a BERT encoder (all-MiniLM-L6-v2 and its kind): mean of the token
//! vectors under the attention mask, L2-normalized, as sentence-transformers computes them.

use crate::{Error, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use std::path::Path;
use tokenizers::{Tokenizer, TruncationParams};

/// Longest input in tokens (sentence-transformers' `max_seq_length` for all-MiniLM-L6-v2);
/// longer texts are truncated, as sentence-transformers does.
const MAX_TOKENS: usize = 256;

/// Texts encoded in one forward pass at most; a longer list is split, after sorting by length so
/// each pass pads little.
const MAX_BATCH: usize = 32;

/// A loaded sentence encoder. [`Embedder::embed`] takes `&self`, so one instance can serve
/// several threads.
pub struct Embedder {
    model: BertModel,
    tokenizer: Tokenizer,
    dim: usize,
    device: Device,
}

/// The vectors of a list of texts, in the order given, with what they cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Embeddings {
    /// One unit-length vector per text.
    pub vectors: Vec<Vec<f32>>,
    /// Tokens of each text as the model saw them (with `[CLS]` and `[SEP]`, after truncation).
    pub token_counts: Vec<usize>,
}

impl Embeddings {
    /// All tokens of the request, for usage accounting.
    pub fn total_tokens(&self) -> usize {
        self.token_counts.iter().sum()
    }
}

impl Embedder {
    /// Loads the model in `dir`: `config.json`, `model.safetensors` (memory-mapped while the
    /// weights are copied in) and `tokenizer.json`.
    pub fn load(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        let config_text = std::fs::read_to_string(&config_path).map_err(|source| Error::Io {
            path: config_path.clone(),
            source,
        })?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| Error::model(&config_path, e))?;

        let weights = dir.join("model.safetensors");
        let device = Device::Cpu;
        // SAFETY: the file is mapped only while `BertModel::load` copies the tensors out of it;
        // like every reader of a model file we assume nobody rewrites it in place meanwhile.
        let vb = unsafe {
            VarBuilder::from_mmaped_safetensors(std::slice::from_ref(&weights), DType::F32, &device)
        }
        .map_err(|e| Error::model(&weights, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| Error::model(&weights, e))?;

        let tokenizer_path = dir.join("tokenizer.json");
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| Error::model(&tokenizer_path, e))?;
        // The file asks for padding every input to 128; we pad each batch to its longest text.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: MAX_TOKENS.min(config.max_position_embeddings),
                ..Default::default()
            }))
            .map_err(Error::tokenizer)?;

        Ok(Embedder {
            model,
            tokenizer,
            dim: config.hidden_size,
            device,
        })
    }

    /// Length of every vector (384 for all-MiniLM-L6-v2).
    pub fn dimension(&self) -> usize {
        self.dim
    }

    /// The token ids the model sees for `text`, `[CLS]` and `[SEP]` included.
    pub fn token_ids(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(Error::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Embeds every text. The result does not depend on how texts are grouped: each is
    /// computed under its own attention mask.
    pub fn embed(&self, texts: &[&str]) -> Result<Embeddings> {
        let mut ids = Vec::with_capacity(texts.len());
        for text in texts {
            ids.push(self.token_ids(text)?);
        }
        // Shortest first, so each forward pass pads to a length close to all of its texts.
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut vectors = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(MAX_BATCH) {
            let batch: Vec<&[u32]> = chunk.iter().map(|&i| ids[i].as_slice()).collect();
            for (&i, vector) in chunk.iter().zip(self.forward(&batch)?) {
                vectors[i] = vector;
            }
        }
        Ok(Embeddings {
            vectors,
            token_counts: ids.iter().map(Vec::len).collect(),
        })
    }

    /// One forward pass: pad to the longest, encode, mean-pool under the mask, normalize.
    fn forward(&self, batch: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let longest = batch.iter().map(|ids| ids.len()).max().unwrap_or(0);
        if longest == 0 {
            return Ok(vec![vec![0.0; self.dim]; batch.len()]);
        }
        let mut input = Vec::with_capacity(batch.len() * longest);
        let mut mask = Vec::with_capacity(batch.len() * longest);
        for ids in batch {
            input.extend_from_slice(ids);
            input.resize(input.len() + longest - ids.len(), 0);
            mask.extend(std::iter::repeat_n(1u32, ids.len()));
            mask.extend(std::iter::repeat_n(0u32, longest - ids.len()));
        }
        let shape = (batch.len(), longest);
        let input = Tensor::from_vec(input, shape, &self.device)?;
        let mask = Tensor::from_vec(mask, shape, &self.device)?;
        let token_types = input.zeros_like()?;
        let hidden = self.model.forward(&input, &token_types, Some(&mask))?;

        let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
        let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
        let mean = summed.broadcast_div(&mask.sum(1)?)?;
        let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?;
        Ok(mean.broadcast_div(&norm)?.to_vec2::<f32>()?)
    }
}
