//! Who may write and who may read each topic, from `config/access.json`:
//! `{"<topic>": {"write": ["alice"], "read": ["alice", "bob"]}}`.
//! A topic missing from the file can be neither written nor read: access is closed by default.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TopicAccess {
    #[serde(default)]
    pub write: BTreeSet<String>,
    #[serde(default)]
    pub read: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessRules {
    topics: HashMap<String, TopicAccess>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read access file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("access file {path} is invalid: {source}")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

impl AccessRules {
    pub fn load(path: &Path) -> Result<AccessRules, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.display().to_string(),
            source,
        })?;
        AccessRules::from_json(&text).map_err(|source| AccessError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn from_json(text: &str) -> Result<AccessRules, serde_json::Error> {
        Ok(AccessRules {
            topics: serde_json::from_str(text)?,
        })
    }

    pub fn can_write(&self, user: &str, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|access| access.write.contains(user))
    }

    pub fn can_read(&self, user: &str, topic: &str) -> bool {
        self.topics
            .get(topic)
            .is_some_and(|access| access.read.contains(user))
    }

    /// Topics named in the file, so start-up can warn about rules for topics that do not exist.
    pub fn topic_names(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_and_read_are_separate_rights() {
        let rules = AccessRules::from_json(
            r#"{"audit.logs": {"write": ["alice"], "read": ["alice", "bob"]}}"#,
        )
        .unwrap();
        assert!(rules.can_write("alice", "audit.logs"));
        assert!(!rules.can_write("bob", "audit.logs"));
        assert!(rules.can_read("bob", "audit.logs"));
        assert!(!rules.can_read("carol", "audit.logs"));
        assert!(
            !rules.can_write("alice", "web.events"),
            "unlisted topics are closed"
        );
    }

    #[test]
    fn unknown_keys_are_an_error() {
        assert!(AccessRules::from_json(r#"{"t": {"writers": ["a"]}}"#).is_err());
    }

    #[test]
    fn shipped_access_file_lets_dev_use_every_topic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config");
        let rules = AccessRules::load(&root.join("access.json")).unwrap();
        for entry in std::fs::read_dir(root.join("topics")).unwrap() {
            let path = entry.unwrap().path();
            let topic = path.file_stem().unwrap().to_str().unwrap().to_owned();
            assert!(
                rules.can_write("dev", &topic) && rules.can_read("dev", &topic),
                "{topic}"
            );
        }
    }
}
