//! The chat template: how a conversation becomes one prompt.
//!
//! GGUF files carry a Jinja template (`tokenizer.chat_template`). We do not run Jinja: we accept
//! the ChatML family (`<|im_start|>role\ncontent<|im_end|>\n` per message, then
//! `<|im_start|>assistant\n`) and read from the template the one thing that varies, its
//! default system prompt, used when the conversation does not start with one.

use crate::chat::{Message, Role};

const START: &str = "<|im_start|>";
const END: &str = "<|im_end|>";

/// A ChatML template, with the model's default system prompt if its template has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatTemplate {
    default_system: Option<String>,
}

impl ChatTemplate {
    /// Reads a Jinja chat template; `None` when it is not ChatML. Without a template at all,
    /// use [`ChatTemplate::chatml`].
    pub fn from_jinja(template: &str) -> Option<Self> {
        if !template.contains(START) || !template.contains(END) {
            return None;
        }
        Some(ChatTemplate {
            default_system: default_system(template),
        })
    }

    /// Plain ChatML with no default system prompt.
    pub fn chatml() -> Self {
        ChatTemplate {
            default_system: None,
        }
    }

    /// The system prompt used when a conversation has none.
    pub fn default_system(&self) -> Option<&str> {
        self.default_system.as_deref()
    }

    /// The prompt for `messages`, ending where the assistant's answer starts.
    pub fn render(&self, messages: &[Message]) -> String {
        let mut out = String::new();
        if let (Some(first), Some(system)) = (messages.first(), &self.default_system)
            && first.role != Role::System
        {
            push_turn(&mut out, Role::System.as_str(), system);
        }
        for message in messages {
            push_turn(&mut out, message.role.as_str(), &message.content);
        }
        out.push_str(START);
        out.push_str("assistant\n");
        out
    }
}

fn push_turn(out: &mut String, role: &str, content: &str) {
    out.push_str(START);
    out.push_str(role);
    out.push('\n');
    out.push_str(content);
    out.push_str(END);
    out.push('\n');
}

/// The text of a literal `<|im_start|>system\n…<|im_end|>` in the template, with the Jinja
/// string escapes undone.
fn default_system(template: &str) -> Option<String> {
    let opening = format!("{START}system");
    let at = template.find(&opening)? + opening.len();
    let rest = &template[at..];
    let body = rest
        .strip_prefix("\\n")
        .or_else(|| rest.strip_prefix('\n'))?;
    let body = &body[..body.find(END)?];
    let mut text = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            text.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => text.push('\n'),
            Some('t') => text.push('\t'),
            Some(other) => text.push(other),
            None => text.push('\\'),
        }
    }
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The template in SmolLM2-135M-Instruct's GGUF (its strings hold real newlines).
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn msg(role: Role, content: &str) -> Message {
        Message {
            role,
            content: content.to_string(),
        }
    }

    #[test]
    fn smollm2_default_system_prompt_is_found() {
        let t = ChatTemplate::from_jinja(SMOLLM2).unwrap();
        assert_eq!(
            t.default_system(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        // A template whose strings spell the newline as a Jinja escape.
        let escaped = "{{ '<|im_start|>system\\nBe \\'nice\\'<|im_end|>\\n' }}";
        let t = ChatTemplate::from_jinja(escaped).unwrap();
        assert_eq!(t.default_system(), Some("Be 'nice'"));
    }

    #[test]
    fn the_default_system_prompt_is_used_only_without_a_system_message() {
        let t = ChatTemplate::from_jinja(SMOLLM2).unwrap();
        assert_eq!(
            t.render(&[msg(Role::User, "Hi")]),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging \
             Face<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            t.render(&[
                msg(Role::System, "Be brief."),
                msg(Role::User, "Hi"),
                msg(Role::Assistant, "Hello."),
                msg(Role::User, "2+2?"),
            ]),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn plain_chatml_has_no_system_prompt_and_other_templates_are_refused() {
        let t = ChatTemplate::chatml();
        assert_eq!(
            t.render(&[msg(Role::User, "Hi")]),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            ChatTemplate::from_jinja("[INST] {{ content }} [/INST]"),
            None
        );
    }
}
