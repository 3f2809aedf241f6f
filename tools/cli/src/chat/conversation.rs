//! The conversation: an optional system prompt followed by user and assistant turns, with
//! dropping of the oldest turns and saving/loading as JSON.
//!
//! The JSON file is `{"messages": [{"role": "...", "content": "..."}, ...]}`; a bare array of
//! messages is accepted when loading too.

use std::path::Path;

use serde::{Deserialize, Serialize};
use tessera_models::chat::ChatMessage;

/// The roles a conversation may hold.
const ROLES: [&str; 3] = ["system", "user", "assistant"];

/// One message as stored in a conversation file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct StoredMessage {
    role: String,
    content: String,
}

/// The layout of a conversation file.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum StoredConversation {
    /// `{"messages": [...]}` (what `/save` writes; other keys are ignored).
    Object { messages: Vec<StoredMessage> },
    /// `[...]`.
    Array(Vec<StoredMessage>),
}

/// The messages of a chat, in order; a system message, when present, comes first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Conversation {
    messages: Vec<ChatMessage>,
}

impl Conversation {
    /// An empty conversation with an optional system prompt.
    pub fn new(system: Option<&str>) -> Self {
        let mut c = Conversation::default();
        c.set_system(system);
        c
    }

    /// All messages, the system prompt first.
    pub fn messages(&self) -> &[ChatMessage] {
        &self.messages
    }

    /// The system prompt, if any.
    pub fn system(&self) -> Option<&str> {
        self.messages
            .first()
            .filter(|m| m.role == "system")
            .map(|m| m.content.as_str())
    }

    /// Replace (or with `None`, remove) the system prompt; the turns stay.
    pub fn set_system(&mut self, system: Option<&str>) {
        if self.system().is_some() {
            self.messages.remove(0);
        }
        if let Some(s) = system {
            self.messages.insert(0, ChatMessage::system(s));
        }
    }

    /// Number of user and assistant messages.
    pub fn n_turn_messages(&self) -> usize {
        self.messages.len() - usize::from(self.system().is_some())
    }

    /// Forget every turn, keeping the system prompt.
    pub fn clear_turns(&mut self) {
        let keep = usize::from(self.system().is_some());
        self.messages.truncate(keep);
    }

    /// Append a user message.
    pub fn push_user(&mut self, text: &str) {
        self.messages.push(ChatMessage::user(text));
    }

    /// Append an assistant message.
    pub fn push_assistant(&mut self, text: &str) {
        self.messages.push(ChatMessage::assistant(text));
    }

    /// Drop the oldest exchange: the first user message and the replies up to the next user
    /// message. The last user message (the one being answered) is never dropped. Returns how
    /// many messages went, 0 when there is nothing older to drop.
    pub fn drop_oldest_turn(&mut self) -> usize {
        let start = usize::from(self.system().is_some());
        let Some(last_user) = self.messages.iter().rposition(|m| m.role == "user") else {
            return 0;
        };
        if last_user <= start {
            return 0;
        }
        let end = self.messages[start + 1..]
            .iter()
            .position(|m| m.role == "user")
            .map(|i| start + 1 + i)
            .unwrap_or(last_user)
            .min(last_user);
        self.messages.drain(start..end);
        end - start
    }

    /// The conversation as the JSON `/save` writes.
    pub fn to_json(&self) -> String {
        let stored = StoredConversation::Object {
            messages: self
                .messages
                .iter()
                .map(|m| StoredMessage {
                    role: m.role.clone(),
                    content: m.content.clone(),
                })
                .collect(),
        };
        serde_json::to_string_pretty(&stored).expect("a conversation serialises")
    }

    /// Parse a conversation file's text. Roles must be `system`, `user` or `assistant`, and a
    /// system message may only come first.
    pub fn from_json(text: &str) -> Result<Conversation, String> {
        let stored: StoredConversation = serde_json::from_str(text).map_err(|e| {
            format!("not a conversation ({e}); expected {{\"messages\": [{{\"role\", \"content\"}}, ...]}}")
        })?;
        let messages = match stored {
            StoredConversation::Object { messages } | StoredConversation::Array(messages) => {
                messages
            }
        };
        for (i, m) in messages.iter().enumerate() {
            if !ROLES.contains(&m.role.as_str()) {
                return Err(format!(
                    "message {} has role {:?}; expected one of {}",
                    i + 1,
                    m.role,
                    ROLES.join(", ")
                ));
            }
            if m.role == "system" && i != 0 {
                return Err(format!(
                    "message {} is a system message; only the first may be",
                    i + 1
                ));
            }
        }
        Ok(Conversation {
            messages: messages
                .into_iter()
                .map(|m| ChatMessage::new(m.role, m.content))
                .collect(),
        })
    }

    /// Write the conversation to `path` as JSON.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        let mut text = self.to_json();
        text.push('\n');
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Read a conversation written by [`Self::save`].
    pub fn load(path: &Path) -> Result<Conversation, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::from_json(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roles(c: &Conversation) -> Vec<&str> {
        c.messages().iter().map(|m| m.role.as_str()).collect()
    }

    #[test]
    fn system_prompt_stays_first() {
        let mut c = Conversation::new(None);
        c.push_user("hi");
        c.set_system(Some("be brief"));
        assert_eq!(roles(&c), ["system", "user"]);
        c.set_system(Some("be long"));
        assert_eq!(c.system(), Some("be long"));
        assert_eq!(c.n_turn_messages(), 1);
        c.set_system(None);
        assert_eq!(roles(&c), ["user"]);
    }

    #[test]
    fn drops_whole_exchanges_but_never_the_last_question() {
        let mut c = Conversation::new(Some("sys"));
        c.push_user("q1");
        c.push_assistant("a1");
        c.push_user("q2");
        c.push_assistant("a2");
        c.push_user("q3");
        assert_eq!(c.drop_oldest_turn(), 2);
        assert_eq!(roles(&c), ["system", "user", "assistant", "user"]);
        assert_eq!(c.messages()[1].content, "q2");
        assert_eq!(c.drop_oldest_turn(), 2);
        assert_eq!(roles(&c), ["system", "user"]);
        assert_eq!(c.drop_oldest_turn(), 0);
        assert_eq!(c.messages()[1].content, "q3");
    }

    #[test]
    fn json_round_trip_and_checks() {
        let mut c = Conversation::new(Some("sys"));
        c.push_user("héllo \"there\"");
        c.push_assistant("hi\nline two");
        let back = Conversation::from_json(&c.to_json()).unwrap();
        assert_eq!(back, c);
        let arr = r#"[{"role":"user","content":"x"}]"#;
        assert_eq!(Conversation::from_json(arr).unwrap().n_turn_messages(), 1);
        assert!(Conversation::from_json(r#"[{"role":"robot","content":"x"}]"#).is_err());
        let late_system = r#"[{"role":"user","content":"x"},{"role":"system","content":"y"}]"#;
        assert!(Conversation::from_json(late_system).is_err());
        assert!(Conversation::from_json("{").is_err());
    }
}
