//! Turning generated token bytes into text pieces: whole UTF-8 characters only, and never a
//! piece of text that a stop string might still turn out to begin.

/// The text generated so far and how much of it has been handed out.
pub(crate) struct TextStream<'a> {
    stops: &'a [String],
    /// Bytes of an unfinished UTF-8 character.
    pending: Vec<u8>,
    text: String,
    /// `text[..emitted]` has been handed out.
    emitted: usize,
}

/// What one step produced.
pub(crate) struct Step<'t> {
    /// New text to hand out (may be empty).
    pub piece: &'t str,
    /// A stop string was reached; the text ends before it.
    pub stopped: bool,
}

impl<'a> TextStream<'a> {
    pub fn new(stops: &'a [String]) -> Self {
        TextStream {
            stops,
            pending: Vec::new(),
            text: String::new(),
            emitted: 0,
        }
    }

    /// Adds the bytes of one token.
    pub fn push(&mut self, bytes: &[u8]) -> Step<'_> {
        self.pending.extend_from_slice(bytes);
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    self.text.push_str(s);
                    self.pending.clear();
                    break;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix was just checked to be UTF-8.
                    self.text
                        .push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        // An unfinished character: wait for the next token's bytes.
                        None => {
                            self.pending.drain(..valid);
                            break;
                        }
                        // Bytes that can never be UTF-8: show them as U+FFFD and go on.
                        Some(bad) => {
                            self.text.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
        let (start, stopped) = self.advance();
        self.step(start, stopped)
    }

    /// Ends the stream: an unfinished character becomes U+FFFD and everything left is handed
    /// out (up to a stop string, if one is completed by that).
    pub fn finish(&mut self) -> Step<'_> {
        if !self.pending.is_empty() {
            self.text.push(char::REPLACEMENT_CHARACTER);
            self.pending.clear();
        }
        let (start, stopped) = self.advance();
        if !stopped {
            self.emitted = self.text.len();
        }
        self.step(start, stopped)
    }

    /// The text handed out so far.
    pub fn text(&self) -> &str {
        &self.text[..self.emitted]
    }

    fn step(&self, start: usize, stopped: bool) -> Step<'_> {
        Step {
            piece: &self.text[start..self.emitted],
            stopped,
        }
    }

    /// Moves `emitted` as far as is safe; returns where the new text starts and whether a
    /// stop string was reached.
    fn advance(&mut self) -> (usize, bool) {
        let start = self.emitted;
        // A stop string cannot begin before `emitted`: text that might begin one is held back.
        let found = self
            .stops
            .iter()
            .filter(|s| !s.is_empty())
            .filter_map(|s| self.text[start..].find(s.as_str()).map(|at| start + at))
            .min();
        if let Some(at) = found {
            self.text.truncate(at);
            self.emitted = at;
            return (start, true);
        }
        let held = self
            .stops
            .iter()
            .map(|s| longest_prefix_at_end(&self.text[start..], s))
            .max()
            .unwrap_or(0);
        self.emitted = self.text.len() - held;
        (start, false)
    }
}

/// Length of the longest proper prefix of `stop` that `text` ends with.
fn longest_prefix_at_end(text: &str, stop: &str) -> usize {
    stop.char_indices()
        .map(|(i, _)| i)
        .skip(1)
        .filter(|&len| text.ends_with(&stop[..len]))
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `chunks` and returns the pieces handed out and whether a stop string was hit.
    fn run(stops: &[&str], chunks: &[&[u8]]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut stream = TextStream::new(&stops);
        let mut pieces = Vec::new();
        for chunk in chunks {
            let step = stream.push(chunk);
            if !step.piece.is_empty() {
                pieces.push(step.piece.to_string());
            }
            if step.stopped {
                assert_eq!(stream.text(), pieces.concat());
                return (pieces, true);
            }
        }
        let step = stream.finish();
        if !step.piece.is_empty() {
            pieces.push(step.piece.to_string());
        }
        let stopped = step.stopped;
        assert_eq!(stream.text(), pieces.concat());
        (pieces, stopped)
    }

    #[test]
    fn a_character_split_across_tokens_comes_out_whole() {
        let wave = "👋".as_bytes();
        let (pieces, stopped) = run(&[], &[b"hi ", &wave[..1], &wave[1..3], &wave[3..], b"!"]);
        assert_eq!(pieces, ["hi ", "👋", "!"]);
        assert!(!stopped);
    }

    #[test]
    fn invalid_and_unfinished_bytes_become_replacement_characters() {
        let (pieces, _) = run(&[], &[b"a\xffb", &"é".as_bytes()[..1]]);
        assert_eq!(pieces.concat(), "a\u{fffd}b\u{fffd}");
    }

    #[test]
    fn a_stop_string_across_tokens_is_cut_and_never_shown() {
        let (pieces, stopped) = run(&["\n\nUser:"], &[b"Sure", b".\n", b"\nUs", b"er:", b" x"]);
        assert_eq!(pieces.concat(), "Sure.");
        assert!(stopped);
    }

    #[test]
    fn held_back_text_is_released_when_it_is_not_a_stop_string() {
        let (pieces, stopped) = run(&["END"], &[b"the E", b"N", b"D", b"ING"]);
        assert_eq!(pieces.concat(), "the ");
        assert!(stopped);
        let (pieces, stopped) = run(&["END"], &[b"the E", b"N", b"a"]);
        assert_eq!(pieces, ["the ", "ENa"]);
        assert!(!stopped);
        let (pieces, stopped) = run(&["END"], &[b"the EN"]);
        assert_eq!(pieces, ["the ", "EN"]);
        assert!(!stopped);
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let (pieces, stopped) = run(&["c", "ab"], &[b"xabc"]);
        assert_eq!(pieces.concat(), "x");
        assert!(stopped);
    }
}
