//! The chat model's tokenizer, built from GGUF metadata: byte-level BPE (GPT-2 style) with the
//! `smollm` pre-tokenizer (every digit alone, then the GPT-2 split, no prefix space).
//!
//! candle's `TokenizerFromGguf` would add a prefix space for this pre-tokenizer (it only knows
//! `qwen2` and `llama3`-like ones), which changes the ids of every prompt, so we build the
//! pipeline here. Decoding does not go through `tokenizers`: each token's bytes are kept, so a
//! stream of tokens can be turned into text without ever splitting a UTF-8 character.

use crate::{Error, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::collections::HashMap;
use std::path::Path;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, PreTokenizerWrapper, Tokenizer};

/// GGUF token types (llama.cpp's `llama_token_type`) that are not text.
const CONTROL: i64 = 3;
const USER_DEFINED: i64 = 4;

/// Text ↔ token ids for a [`crate::ChatModel`].
pub struct ChatTokenizer {
    tokenizer: Tokenizer,
    /// The bytes each token stands for; empty for special tokens, which are never shown.
    bytes: Vec<Vec<u8>>,
    special: Vec<bool>,
    eos: u32,
    /// Ids that end a generation: the end-of-turn token and `<|endoftext|>` if the model has it.
    stop_ids: Vec<u32>,
}

impl ChatTokenizer {
    /// Builds the tokenizer described by the metadata of `gguf` (read from `path`, named in
    /// errors).
    pub(crate) fn from_gguf(gguf: &Content, path: &Path) -> Result<Self> {
        let meta = |key: &str| {
            gguf.metadata
                .get(key)
                .ok_or_else(|| Error::model(path, format!("no {key} in the metadata")))
        };
        let kind = meta("tokenizer.ggml.model")?.to_string()?;
        if kind != "gpt2" {
            return Err(Error::model(
                path,
                format!("tokenizer {kind:?} is not supported (only byte-level BPE, gpt2)"),
            ));
        }
        let tokens = strings(meta("tokenizer.ggml.tokens")?, path)?;
        let merges = strings(meta("tokenizer.ggml.merges")?, path)?
            .into_iter()
            .map(|m| match m.split_once(' ') {
                Some((a, b)) => Ok((a.to_string(), b.to_string())),
                None => Err(Error::model(path, format!("merge {m:?} has no space"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let types = match gguf.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => integers(v, path)?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::model(path, "token_type and tokens differ in length"));
        }
        let eos = meta("tokenizer.ggml.eos_token_id")?.to_u32()?;
        let unk = gguf
            .metadata
            .get("tokenizer.ggml.unknown_token_id")
            .and_then(|v| v.to_u32().ok())
            .and_then(|id| tokens.get(id as usize));

        let vocab: Vocab = tokens
            .iter()
            .enumerate()
            .map(|(id, token)| (token.clone(), id as u32))
            .collect();
        let mut bpe = BPE::builder().vocab_and_merges(vocab, merges);
        if let Some(unk) = unk {
            bpe = bpe.unk_token(unk.clone());
        }
        let bpe = bpe.build().map_err(Error::tokenizer)?;
        let mut tokenizer = Tokenizer::new(bpe);
        let pre: Vec<PreTokenizerWrapper> = vec![
            Digits::new(true).into(),
            ByteLevel::new(false, true, true).into(),
        ];
        tokenizer.with_pre_tokenizer(Some(Sequence::new(pre)));

        let special: Vec<bool> = types
            .iter()
            .map(|&t| t == CONTROL || t == USER_DEFINED)
            .collect();
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&special)
            .filter(|(_, special)| **special)
            .map(|(token, _)| AddedToken::from(token.clone(), true))
            .collect();
        tokenizer
            .add_special_tokens(added)
            .map_err(Error::tokenizer)?;

        let byte_of = byte_of_char();
        let bytes = tokens
            .iter()
            .zip(&special)
            .map(|(token, &special)| {
                if special {
                    return Vec::new();
                }
                let mut out = Vec::with_capacity(token.len());
                for c in token.chars() {
                    match byte_of.get(&c) {
                        Some(&b) => out.push(b),
                        // Not produced by byte-level BPE; keep the character itself.
                        None => out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes()),
                    }
                }
                out
            })
            .collect();
        let mut stop_ids = vec![eos];
        if let Some(end) = tokens.iter().position(|t| t == "<|endoftext|>")
            && end as u32 != eos
        {
            stop_ids.push(end as u32);
        }
        Ok(ChatTokenizer {
            tokenizer,
            bytes,
            special,
            eos,
            stop_ids,
        })
    }

    /// The ids of `text`. Special tokens written in the text (`<|im_start|>`) become their
    /// single id; nothing is added at the start or the end.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(Error::tokenizer)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out. Bytes that are not UTF-8 become U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::new();
        for &id in ids {
            bytes.extend_from_slice(self.token_bytes(id));
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.bytes.len()
    }

    /// The end-of-turn token (`<|im_end|>` for SmolLM2).
    pub fn eos(&self) -> u32 {
        self.eos
    }

    /// Whether `id` is a special (control) token rather than text.
    pub fn is_special(&self, id: u32) -> bool {
        self.special.get(id as usize).copied().unwrap_or(false)
    }

    pub(crate) fn token_bytes(&self, id: u32) -> &[u8] {
        self.bytes.get(id as usize).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn is_stop(&self, id: u32) -> bool {
        self.stop_ids.contains(&id)
    }
}

fn strings(value: &Value, path: &Path) -> Result<Vec<String>> {
    value
        .to_vec()?
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            other => Err(Error::model(
                path,
                format!("expected a string, got {other:?}"),
            )),
        })
        .collect()
}

fn integers(value: &Value, path: &Path) -> Result<Vec<i64>> {
    value
        .to_vec()?
        .iter()
        .map(|v| match v {
            Value::I32(n) => Ok(i64::from(*n)),
            Value::U32(n) => Ok(i64::from(*n)),
            Value::I64(n) => Ok(*n),
            Value::U8(n) => Ok(i64::from(*n)),
            Value::I8(n) => Ok(i64::from(*n)),
            other => Err(Error::model(
                path,
                format!("expected an integer, got {other:?}"),
            )),
        })
        .collect()
}

/// GPT-2's byte-level alphabet, reversed: the printable bytes stand for themselves, the other
/// 68 are shifted to U+0100 and up, in byte order.
fn byte_of_char() -> HashMap<char, u8> {
    let mut map = HashMap::with_capacity(256);
    let mut shifted = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let c = if printable {
            char::from(b)
        } else {
            shifted += 1;
            char::from_u32(255 + shifted).unwrap_or(char::REPLACEMENT_CHARACTER)
        };
        map.insert(c, b);
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let map = byte_of_char();
        assert_eq!(map.len(), 256);
        assert_eq!(map[&'A'], b'A');
        // Space is the 33rd non-printable byte (0..=32), so it maps to U+0120 'Ġ'.
        assert_eq!(map[&'Ġ'], b' ');
        assert_eq!(map[&'Ċ'], b'\n');
        assert_eq!(map[&'\u{100}'], 0);
    }
}
