//! Who may write and who may read each topic, and with which restrictions: the access file
//! (`catalogue.access_file`, default `config/access.json`), reloaded on SIGHUP.
//!
//! ```json
//! {
//!   "audit.logs": {"write": ["alice"], "read": ["alice", "bob"]},
//!   "public.cps.za.*": {
//!     "write": ["group:cps-producers", {"user": "ci-bot", "fields": {"environment": ["dev", "test"]}}],
//!     "read": ["group:analysts", {"user": "avms-portal", "fields": {"tenant_id": ["avms"]}}]
//!   },
//!   "*": {"read": ["group:auditors"]}
//! }
//! ```
//!
//! - A key is a topic name, a topic family `prefix.*` (every topic whose name starts with `prefix.`,
//!   deeper ones included), or `*` (every topic). Every key that matches a topic applies to it.
//! - `write` and `read` list who may do it. An entry is a user (a token's `sub`), `group:<name>` (the
//!   token's groups claim holds `<name>`), `*` (any authenticated user), or an object
//!   `{"user": "<sub>"}` / `{"group": "<name>"}` with optional `fields` restrictions. (A user literally
//!   named `*` or `group:x` can only be written in the object form.)
//! - `fields` maps a payload field (a dot path, `payload.` optional) to the values allowed: a list of
//!   strings, numbers or booleans, `{"values": [...]}`, or, for writes only, `{"regex": "..."}` (the whole
//!   string value must match). On a write every event must have an allowed value at every restricted
//!   field (a missing value is a violation), else the request is refused with 403 `permission` naming
//!   the field. On a read the restrictions are ANDed to whatever the analyst asks for: they only ever see
//!   matching events. (Regexes are refused for reads: the database's regex dialect is not Rust's, and a
//!   restriction must mean exactly the same thing in both places.)
//! - Restrictions accumulate: a caller matched by several entries (as a user and through a group, or
//!   under several keys) is bound by the `fields` of every matching entry at once. A grant never lifts
//!   another entry's restriction.
//! - A topic no key matches can be neither written nor read: access is closed by default. The old format
//!   (lists of user names only) is a subset of this one and means the same.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use regex::Regex;
use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::error::{ApiError, ErrorDetail, ErrorKind};
use crate::ingest::{EventOutcome, PreparedBody};
use crate::query::value::{shorten, Decimal};
use crate::query::{self, FieldCatalogue, Filter};

/// Which topics a key of the file applies to.
#[derive(Debug, Clone, PartialEq)]
enum TopicPattern {
    Exact(String),
    /// `prefix.*`, stored as `prefix.`.
    Family(String),
    All,
}

impl TopicPattern {
    fn parse(key: &str) -> Result<TopicPattern, String> {
        if key == "*" {
            return Ok(TopicPattern::All);
        }
        if let Some(prefix) = key.strip_suffix(".*") {
            if prefix.is_empty() || prefix.contains('*') {
                return Err("a topic family is written `prefix.*` with one `*` at the end".into());
            }
            return Ok(TopicPattern::Family(format!("{prefix}.")));
        }
        if key.is_empty() || key.contains('*') {
            return Err(
                "a key is a topic name, `prefix.*` for a family of topics, or `*` for all".into(),
            );
        }
        Ok(TopicPattern::Exact(key.to_owned()))
    }

    fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::Exact(name) => name == topic,
            TopicPattern::Family(prefix) => topic.starts_with(prefix.as_str()),
            TopicPattern::All => true,
        }
    }
}

/// Who an entry of a `write`/`read` list names.
#[derive(Debug, Clone, PartialEq)]
enum Who {
    User(String),
    Group(String),
    Anyone,
}

impl Who {
    fn matches(&self, principal: &Principal) -> bool {
        match self {
            Who::User(user) => principal.user == *user,
            Who::Group(group) => principal.in_group(group),
            Who::Anyone => true,
        }
    }
}

/// The values a restricted field may have.
#[derive(Debug, Clone)]
pub enum Allowed {
    /// One of these strings, numbers (compared by value) or booleans.
    Values(Vec<Value>),
    /// A string the whole of which matches (the pattern is anchored when loaded).
    Pattern(Regex),
}

impl PartialEq for Allowed {
    fn eq(&self, other: &Allowed) -> bool {
        match (self, other) {
            (Allowed::Values(a), Allowed::Values(b)) => a == b,
            (Allowed::Pattern(a), Allowed::Pattern(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

impl Allowed {
    fn admits(&self, value: &Value) -> bool {
        match self {
            Allowed::Values(values) => values.iter().any(|allowed| same_scalar(allowed, value)),
            Allowed::Pattern(regex) => value.as_str().is_some_and(|text| regex.is_match(text)),
        }
    }

    fn describe(&self) -> String {
        match self {
            Allowed::Values(values) => {
                let listed: Vec<String> = values.iter().map(Value::to_string).collect();
                format!("one of {}", shorten(&listed.join(", "), 300))
            }
            Allowed::Pattern(regex) => {
                // Shown as written in the file, without the anchoring added on load.
                let pattern = regex
                    .as_str()
                    .strip_prefix("^(?:")
                    .and_then(|p| p.strip_suffix(")$"))
                    .unwrap_or(regex.as_str());
                format!("a string matching /{}/", shorten(pattern, 200))
            }
        }
    }
}

/// Scalars equal as JSON values, numbers by value (`1` equals `1.0`).
fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            match (Decimal::from_json_number(x), Decimal::from_json_number(y)) {
                (Some(x), Some(y)) => x == y,
                _ => x == y,
            }
        }
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

/// One restricted field of an entry.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldRule {
    /// The payload path as written, without a `payload.` prefix (`additional_info.region`).
    pub field: String,
    path: Vec<String>,
    pub allowed: Allowed,
}

impl FieldRule {
    fn value_in<'a>(&self, payload: &'a Value) -> Option<&'a Value> {
        query::payload_at(payload, &self.path)
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Grant {
    who: Who,
    fields: Vec<FieldRule>,
}

#[derive(Debug, Clone, PartialEq)]
struct TopicRule {
    key: String,
    pattern: TopicPattern,
    write: Vec<Grant>,
    read: Vec<Grant>,
}

/// The restrictions an allowed caller is bound by: every rule must hold. Empty: unrestricted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Restrictions {
    rules: Vec<FieldRule>,
}

impl Restrictions {
    pub fn is_unrestricted(&self) -> bool {
        self.rules.is_empty()
    }

    pub fn rules(&self) -> &[FieldRule] {
        &self.rules
    }

    /// The violations of one event's payload, as 403 `permission` details naming `prefix` + the field.
    pub fn violations(&self, payload: &Value, prefix: &str, user: &str) -> Vec<ErrorDetail> {
        self.rules
            .iter()
            .filter(|rule| {
                !rule
                    .value_in(payload)
                    .is_some_and(|v| rule.allowed.admits(v))
            })
            .map(|rule| {
                ErrorDetail::new(
                    ErrorKind::Permission,
                    format!(
                        "user {user:?} may only send events whose `{}` is {}",
                        rule.field,
                        rule.allowed.describe()
                    ),
                )
                .with_field(format!("{prefix}{}", rule.field))
            })
            .collect()
    }

    /// Checks every event that would be published; one violating event refuses the whole request (403),
    /// so nothing of it is published.
    pub fn check_write(&self, prepared: &PreparedBody, user: &str) -> Result<(), ApiError> {
        if self.is_unrestricted() {
            return Ok(());
        }
        let mut details = Vec::new();
        for (index, outcome) in prepared.outcomes.iter().enumerate() {
            if let EventOutcome::Accepted(event) = outcome {
                let prefix = if prepared.is_batch {
                    format!("[{index}].")
                } else {
                    String::new()
                };
                details.extend(self.violations(&event.payload, &prefix, user));
            }
        }
        if details.is_empty() {
            Ok(())
        } else {
            // A huge batch of violations needs no more than a page of explanation.
            details.truncate(50);
            Err(ApiError::from_details(details))
        }
    }

    /// The mandatory filters of a restricted reader over a topic with `fields`. A restriction the topic
    /// cannot express (no such field, a value of the wrong type) refuses the read (403): a restricted
    /// reader never gets an unrestricted answer.
    pub fn read_filters(
        &self,
        fields: &FieldCatalogue,
        user: &str,
        topic: &str,
    ) -> Result<Vec<Filter>, ApiError> {
        self.rules
            .iter()
            .map(|rule| {
                let values = match &rule.allowed {
                    Allowed::Values(values) => values.as_slice(),
                    // Refused when the file is loaded; kept closed here too.
                    Allowed::Pattern(_) => &[],
                };
                query::restriction(fields, &format!("payload.{}", rule.field), values).map_err(
                    |reason| {
                        tracing::warn!(user, topic, field = %rule.field, %reason, "read restriction cannot be applied to this topic");
                        ApiError::new(
                            ErrorKind::Permission,
                            format!(
                                "user {user:?} may only read events of topic {topic:?} restricted by `{}`, which this topic cannot be filtered by",
                                rule.field
                            ),
                        )
                        .with_field("topic")
                    },
                )
            })
            .collect()
    }
}

/// The parsed access file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AccessRules {
    rules: Vec<TopicRule>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("cannot read access file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("access file {path} is invalid: {message}")]
    Parse { path: String, message: String },
}

/// Which list of a topic's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Write,
    Read,
}

impl AccessRules {
    pub fn load(path: &Path) -> Result<AccessRules, AccessError> {
        let text = std::fs::read_to_string(path).map_err(|source| AccessError::Read {
            path: path.display().to_string(),
            source,
        })?;
        AccessRules::from_json(&text).map_err(|message| AccessError::Parse {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses the file's text; the error names the place of the first problem
    /// (`"audit.logs".write[1].fields.environment: ...`).
    pub fn from_json(text: &str) -> Result<AccessRules, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        let Value::Object(topics) = value else {
            return Err("the file must be a JSON object of topics".into());
        };
        let mut rules = Vec::new();
        for (key, body) in &topics {
            let at = format!("{key:?}");
            let pattern = TopicPattern::parse(key).map_err(|e| format!("{at}: {e}"))?;
            let Value::Object(body) = body else {
                return Err(format!(
                    "{at}: must be an object with `write` and/or `read`"
                ));
            };
            if let Some(unknown) = body.keys().find(|k| *k != "write" && *k != "read") {
                return Err(format!(
                    "{at}: unknown key {unknown:?} (a topic has `write` and `read`)"
                ));
            }
            rules.push(TopicRule {
                key: key.clone(),
                pattern,
                write: parse_grants(body, "write", &at, Action::Write)?,
                read: parse_grants(body, "read", &at, Action::Read)?,
            });
        }
        Ok(AccessRules { rules })
    }

    fn access(&self, principal: &Principal, topic: &str, action: Action) -> Option<Restrictions> {
        let mut allowed = false;
        let mut restrictions = Restrictions::default();
        for rule in self.rules.iter().filter(|r| r.pattern.matches(topic)) {
            let grants = match action {
                Action::Write => &rule.write,
                Action::Read => &rule.read,
            };
            for grant in grants.iter().filter(|g| g.who.matches(principal)) {
                allowed = true;
                for field in &grant.fields {
                    if !restrictions.rules.contains(field) {
                        restrictions.rules.push(field.clone());
                    }
                }
            }
        }
        allowed.then_some(restrictions)
    }

    /// Whether `principal` may write to `topic`, and under which restrictions (`None`: not at all).
    pub fn write_access(&self, principal: &Principal, topic: &str) -> Option<Restrictions> {
        self.access(principal, topic, Action::Write)
    }

    /// Whether `principal` may read `topic`, and under which restrictions (`None`: not at all).
    pub fn read_access(&self, principal: &Principal, topic: &str) -> Option<Restrictions> {
        self.access(principal, topic, Action::Read)
    }

    /// [`AccessRules::write_access`] as a 403 `permission` for the handlers.
    pub fn authorize_write(
        &self,
        principal: &Principal,
        topic: &str,
    ) -> Result<Restrictions, ApiError> {
        self.write_access(principal, topic).ok_or_else(|| {
            ApiError::new(
                ErrorKind::Permission,
                format!("user {:?} may not write to topic {topic:?}", principal.user),
            )
            .with_field("topic")
        })
    }

    /// [`AccessRules::read_access`] as a 403 `permission` for the handlers.
    pub fn authorize_read(
        &self,
        principal: &Principal,
        topic: &str,
    ) -> Result<Restrictions, ApiError> {
        self.read_access(principal, topic).ok_or_else(|| {
            ApiError::new(
                ErrorKind::Permission,
                format!("user {:?} may not read topic {topic:?}", principal.user),
            )
            .with_field("topic")
        })
    }

    /// Dead letters hold raw, possibly undecodable messages that no field restriction can filter: they
    /// are readable only with unrestricted read access to their topic, and those without a topic only
    /// with an unrestricted read grant under the `*` key.
    pub fn can_read_dead_letters(&self, principal: &Principal, topic: Option<&str>) -> bool {
        match topic {
            Some(topic) => self
                .read_access(principal, topic)
                .is_some_and(|r| r.is_unrestricted()),
            None => {
                let all = AccessRules {
                    rules: self
                        .rules
                        .iter()
                        .filter(|r| r.pattern == TopicPattern::All)
                        .cloned()
                        .collect(),
                };
                // A topic name no real topic has: only `*` rules can match it.
                all.read_access(principal, "\u{0}")
                    .is_some_and(|r| r.is_unrestricted())
            }
        }
    }

    /// Compatibility: [`AccessRules::write_access`] for a user without groups.
    pub fn can_write(&self, user: &str, topic: &str) -> bool {
        self.write_access(&Principal::user(user), topic).is_some()
    }

    /// Compatibility: [`AccessRules::read_access`] for a user without groups.
    pub fn can_read(&self, user: &str, topic: &str) -> bool {
        self.read_access(&Principal::user(user), topic).is_some()
    }

    /// Topics named exactly in the file (not families), so start-up can warn about rules for topics
    /// that do not exist.
    pub fn topic_names(&self) -> impl Iterator<Item = &str> {
        self.rules.iter().filter_map(|r| match &r.pattern {
            TopicPattern::Exact(name) => Some(name.as_str()),
            _ => None,
        })
    }

    /// The keys of the file that match none of `topics` (probably a typo).
    pub fn unmatched_keys<'a>(&'a self, topics: &[&str]) -> Vec<&'a str> {
        self.rules
            .iter()
            .filter(|r| !topics.iter().any(|t| r.pattern.matches(t)))
            .map(|r| r.key.as_str())
            .collect()
    }
}

fn parse_grants(
    body: &Map<String, Value>,
    action_key: &str,
    at: &str,
    action: Action,
) -> Result<Vec<Grant>, String> {
    let Some(list) = body.get(action_key) else {
        return Ok(Vec::new());
    };
    let Value::Array(entries) = list else {
        return Err(format!("{at}.{action_key}: must be a list"));
    };
    entries
        .iter()
        .enumerate()
        .map(|(i, entry)| parse_grant(entry, &format!("{at}.{action_key}[{i}]"), action))
        .collect()
}

fn parse_grant(entry: &Value, at: &str, action: Action) -> Result<Grant, String> {
    match entry {
        Value::String(name) => Ok(Grant {
            who: parse_who(name).map_err(|e| format!("{at}: {e}"))?,
            fields: Vec::new(),
        }),
        Value::Object(object) => {
            if let Some(unknown) = object
                .keys()
                .find(|k| !["user", "group", "fields"].contains(&k.as_str()))
            {
                return Err(format!(
                    "{at}: unknown key {unknown:?} (an entry has `user` or `group`, and `fields`)"
                ));
            }
            let who = match (object.get("user"), object.get("group")) {
                (Some(Value::String(user)), None) if !user.is_empty() => Who::User(user.clone()),
                (None, Some(Value::String(group))) if !group.is_empty() => {
                    Who::Group(group.clone())
                }
                _ => {
                    return Err(format!(
                        "{at}: needs exactly one of `user` and `group`, a non-empty string"
                    ))
                }
            };
            let fields = match object.get("fields") {
                None => Vec::new(),
                Some(Value::Object(fields)) => fields
                    .iter()
                    .map(|(name, spec)| {
                        parse_field_rule(name, spec, &format!("{at}.fields"), action)
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(format!("{at}.fields: must be an object of fields")),
            };
            Ok(Grant { who, fields })
        }
        _ => Err(format!(
            "{at}: an entry is a user name, \"group:<name>\", \"*\", or an object"
        )),
    }
}

fn parse_who(name: &str) -> Result<Who, String> {
    if name == "*" {
        return Ok(Who::Anyone);
    }
    if let Some(group) = name.strip_prefix("group:") {
        if group.is_empty() {
            return Err("\"group:\" needs a group name".into());
        }
        return Ok(Who::Group(group.to_owned()));
    }
    if name.is_empty() {
        return Err("empty user name".into());
    }
    Ok(Who::User(name.to_owned()))
}

fn parse_field_rule(
    name: &str,
    spec: &Value,
    at: &str,
    action: Action,
) -> Result<FieldRule, String> {
    let at = format!("{at}.{name}");
    let field = name.strip_prefix("payload.").unwrap_or(name);
    let path: Vec<String> = field.split('.').map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!("{at}: not a field path (`a.b.c`)"));
    }
    let values = |values: &[Value]| -> Result<Allowed, String> {
        if values.is_empty() {
            return Err(format!("{at}: the list of allowed values is empty"));
        }
        if let Some(bad) = values
            .iter()
            .find(|v| !(v.is_string() || v.is_number() || v.is_boolean()))
        {
            return Err(format!(
                "{at}: allowed values are strings, numbers or booleans, not {bad}"
            ));
        }
        Ok(Allowed::Values(values.to_vec()))
    };
    let allowed = match spec {
        Value::Array(list) => values(list)?,
        Value::Object(object) => match (object.get("values"), object.get("regex"), object.len()) {
            (Some(Value::Array(list)), None, 1) => values(list)?,
            (None, Some(Value::String(pattern)), 1) => {
                if action == Action::Read {
                    return Err(format!(
                        "{at}: a read restriction is a list of values; regexes apply to writes only"
                    ));
                }
                let anchored = format!("^(?:{pattern})$");
                let regex = regex::RegexBuilder::new(&anchored)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| format!("{at}: regex does not compile: {e}"))?;
                Allowed::Pattern(regex)
            }
            _ => {
                return Err(format!(
                "{at}: must be a list of values, {{\"values\": [...]}} or {{\"regex\": \"...\"}}"
            ))
            }
        },
        _ => {
            return Err(format!(
                "{at}: must be a list of values, {{\"values\": [...]}} or {{\"regex\": \"...\"}}"
            ))
        }
    };
    Ok(FieldRule {
        field: field.to_owned(),
        path,
        allowed,
    })
}

/// The access rules in use, replaced whole by [`SharedAccess::reload`]: a request sees the old rules or
/// the new ones, never a mix, and no request waits for a reload.
pub struct SharedAccess {
    path: Option<PathBuf>,
    current: RwLock<Arc<AccessRules>>,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
}

impl SharedAccess {
    /// Loads the file; fails (at start-up) when it cannot be read or is invalid.
    pub fn load(path: &Path) -> Result<SharedAccess, AccessError> {
        let rules = AccessRules::load(path)?;
        let mut shared = SharedAccess::new(rules);
        shared.path = Some(path.to_owned());
        Ok(shared)
    }

    /// Fixed rules, not backed by a file ([`SharedAccess::reload`] keeps them).
    pub fn new(rules: AccessRules) -> SharedAccess {
        SharedAccess {
            path: None,
            current: RwLock::new(Arc::new(rules)),
            reloads: AtomicU64::new(0),
            failed_reloads: AtomicU64::new(0),
        }
    }

    /// The rules in use now.
    pub fn rules(&self) -> Arc<AccessRules> {
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Reads the file again. A file that cannot be read or is invalid changes nothing: the rules in use
    /// stay, and the error is returned for the log.
    pub fn reload(&self) -> Result<(), AccessError> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        match AccessRules::load(path) {
            Ok(rules) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(rules);
                self.reloads.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
            Err(error) => {
                self.failed_reloads.fetch_add(1, Ordering::SeqCst);
                Err(error)
            }
        }
    }

    /// [`AccessRules::write_access`] under the rules in use now.
    pub fn write_access(&self, principal: &Principal, topic: &str) -> Option<Restrictions> {
        self.rules().write_access(principal, topic)
    }

    /// [`AccessRules::read_access`] under the rules in use now.
    pub fn read_access(&self, principal: &Principal, topic: &str) -> Option<Restrictions> {
        self.rules().read_access(principal, topic)
    }

    /// [`AccessRules::authorize_write`] under the rules in use now.
    pub fn authorize_write(
        &self,
        principal: &Principal,
        topic: &str,
    ) -> Result<Restrictions, ApiError> {
        self.rules().authorize_write(principal, topic)
    }

    /// [`AccessRules::authorize_read`] under the rules in use now.
    pub fn authorize_read(
        &self,
        principal: &Principal,
        topic: &str,
    ) -> Result<Restrictions, ApiError> {
        self.rules().authorize_read(principal, topic)
    }

    /// [`AccessRules::can_read_dead_letters`] under the rules in use now.
    pub fn can_read_dead_letters(&self, principal: &Principal, topic: Option<&str>) -> bool {
        self.rules().can_read_dead_letters(principal, topic)
    }

    /// Successful reloads since start.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::SeqCst)
    }

    /// Reloads that kept the old rules because the file was unreadable or invalid.
    pub fn failed_reloads(&self) -> u64 {
        self.failed_reloads.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules(json: Value) -> AccessRules {
        AccessRules::from_json(&json.to_string()).unwrap()
    }

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
        let error =
            AccessRules::from_json(r#"{"t": {"write": [{"user": "a", "field": {"x": ["y"]}}]}}"#)
                .unwrap_err();
        assert!(error.contains("\"t\".write[0]"), "{error}");
    }

    #[test]
    fn families_and_star_match_by_prefix() {
        let rules = rules(json!({
            "public.cps.za.*": {"read": ["analyst"]},
            "*": {"read": ["auditor"]},
        }));
        for topic in ["public.cps.za.runs", "public.cps.za.jobs.v2"] {
            assert!(rules.can_read("analyst", topic), "{topic}");
        }
        assert!(!rules.can_read("analyst", "public.cps.za"));
        assert!(!rules.can_read("analyst", "public.cps.zab.runs"));
        assert!(rules.can_read("auditor", "anything.at.all"));
        assert!(!rules.can_write("auditor", "anything.at.all"));
        for bad in ["public.*.runs", "*.runs", ".*", "a*", ""] {
            assert!(
                AccessRules::from_json(&json!({ bad: {"read": ["x"]} }).to_string()).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn groups_and_anyone() {
        let rules = rules(json!({
            "t": {"write": ["group:producers"], "read": ["*"]},
            "u": {"read": [{"group": "analysts"}]},
        }));
        let member = Principal::user("alice").with_groups(["producers"]);
        assert!(rules.write_access(&member, "t").is_some());
        assert!(rules.write_access(&Principal::user("alice"), "t").is_none());
        assert!(
            rules
                .write_access(&Principal::user("producers"), "t")
                .is_none(),
            "a group is not a user"
        );
        assert!(rules.read_access(&Principal::user("anyone"), "t").is_some());
        assert!(rules
            .read_access(&Principal::user("x").with_groups(["analysts"]), "u")
            .is_some());
        assert!(AccessRules::from_json(r#"{"t": {"read": ["group:"]}}"#).is_err());
    }

    #[test]
    fn write_restrictions_name_the_field() {
        let rules = rules(json!({"runs": {"write": [
            {"user": "ci", "fields": {"environment": ["dev", "test"], "payload.meta.build": {"regex": "[0-9]+"}}},
            "admin"
        ]}}));
        let ci = rules.write_access(&Principal::user("ci"), "runs").unwrap();
        assert!(rules
            .write_access(&Principal::user("admin"), "runs")
            .unwrap()
            .is_unrestricted());
        let ok = json!({"environment": "dev", "meta": {"build": "123"}});
        assert!(ci.violations(&ok, "", "ci").is_empty());
        let bad = json!({"environment": "prod", "meta": {"build": "12a"}});
        let details = ci.violations(&bad, "[3].", "ci");
        let fields: Vec<_> = details.iter().map(|d| d.field.clone().unwrap()).collect();
        assert_eq!(fields, ["[3].environment", "[3].meta.build"]);
        assert!(details.iter().all(|d| d.kind == ErrorKind::Permission));
        assert!(
            details[0].message.contains("\"dev\""),
            "{}",
            details[0].message
        );
        assert!(
            details[1].message.contains("/[0-9]+/"),
            "{}",
            details[1].message
        );
        // Missing, null, wrong-typed and partially matching values are all violations.
        for payload in [
            json!({"meta": {"build": "1"}}),
            json!({"environment": null, "meta": {"build": "1"}}),
            json!({"environment": ["dev"], "meta": {"build": "1"}}),
            json!({"environment": "dev", "meta": {"build": "x1"}}),
            json!({"environment": "dev", "meta": {"build": 1}}),
        ] {
            assert_eq!(ci.violations(&payload, "", "ci").len(), 1, "{payload}");
        }
    }

    #[test]
    fn numbers_are_compared_by_value() {
        let rules =
            rules(json!({"t": {"write": [{"user": "a", "fields": {"n": [1, 2.5, true]}}]}}));
        let a = rules.write_access(&Principal::user("a"), "t").unwrap();
        for ok in [
            json!({"n": 1}),
            json!({"n": 1.0}),
            json!({"n": 2.5}),
            json!({"n": true}),
        ] {
            assert!(a.violations(&ok, "", "a").is_empty(), "{ok}");
        }
        for bad in [json!({"n": "1"}), json!({"n": 2}), json!({"n": false})] {
            assert!(!a.violations(&bad, "", "a").is_empty(), "{bad}");
        }
    }

    #[test]
    fn restrictions_accumulate_over_matching_entries() {
        let rules = rules(json!({
            "t.*": {"read": ["group:staff", {"group": "partners", "fields": {"tenant_id": ["avms"]}}]},
            "t.x": {"read": [{"user": "bob", "fields": {"region": ["eu"]}}]},
        }));
        let staff = Principal::user("bob").with_groups(["staff"]);
        assert!(rules.read_access(&staff, "t.y").unwrap().is_unrestricted());
        let both = Principal::user("bob").with_groups(["staff", "partners"]);
        let fields: Vec<_> = rules
            .read_access(&both, "t.x")
            .unwrap()
            .rules()
            .iter()
            .map(|r| r.field.clone())
            .collect();
        assert_eq!(fields, ["tenant_id", "region"]);
    }

    #[test]
    fn read_restrictions_are_value_lists_only() {
        let error = AccessRules::from_json(
            r#"{"t": {"read": [{"user": "a", "fields": {"x": {"regex": ".*"}}}]}}"#,
        )
        .unwrap_err();
        assert!(error.contains("writes only"), "{error}");
        for bad in [
            r#"{"t": {"write": [{"user": "a", "fields": {"x": []}}]}}"#,
            r#"{"t": {"write": [{"user": "a", "fields": {"x": [null]}}]}}"#,
            r#"{"t": {"write": [{"user": "a", "fields": {"x": [{"a": 1}]}}]}}"#,
            r#"{"t": {"write": [{"user": "a", "fields": {"x": {"regex": "("}}}]}}"#,
            r#"{"t": {"write": [{"user": "a", "fields": {"x": {"values": ["a"], "regex": "a"}}}]}}"#,
            r#"{"t": {"write": [{"user": "a", "fields": {"a..b": ["x"]}}]}}"#,
            r#"{"t": {"write": [{"user": "a", "group": "b"}]}}"#,
            r#"{"t": {"write": [5]}}"#,
            r#"{"t": {"write": "alice"}}"#,
            r#"["t"]"#,
        ] {
            assert!(AccessRules::from_json(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn read_filters_fail_closed() {
        let rules =
            rules(json!({"t": {"read": [{"user": "p", "fields": {"tenant_id": ["avms"]}}]}}));
        let restrictions = rules.read_access(&Principal::user("p"), "t").unwrap();
        let with_field = FieldCatalogue::from_schema(
            &json!({"type": "object", "properties": {"tenant_id": {"type": "string"}}}),
        );
        let filters = restrictions.read_filters(&with_field, "p", "t").unwrap();
        assert_eq!(filters.len(), 1);
        assert_eq!(filters[0].key, "tenant_id_in");
        let without = FieldCatalogue::default();
        let error = restrictions.read_filters(&without, "p", "t").unwrap_err();
        assert_eq!(error.status(), 403);
        let numeric = FieldCatalogue::from_schema(
            &json!({"type": "object", "properties": {"tenant_id": {"type": "integer"}}}),
        );
        assert_eq!(
            restrictions
                .read_filters(&numeric, "p", "t")
                .unwrap_err()
                .status(),
            403
        );
    }

    #[test]
    fn dead_letters_need_unrestricted_read() {
        let rules = rules(json!({
            "t": {"read": ["alice", {"user": "bob", "fields": {"x": ["1"]}}]},
            "*": {"read": ["ops"]},
        }));
        assert!(rules.can_read_dead_letters(&Principal::user("alice"), Some("t")));
        assert!(!rules.can_read_dead_letters(&Principal::user("bob"), Some("t")));
        assert!(!rules.can_read_dead_letters(&Principal::user("alice"), None));
        assert!(rules.can_read_dead_letters(&Principal::user("ops"), None));
        assert!(rules.can_read_dead_letters(&Principal::user("ops"), Some("t")));
    }

    #[test]
    fn reload_keeps_old_rules_when_the_file_is_invalid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.json");
        std::fs::write(&path, r#"{"t": {"read": ["alice"]}}"#).unwrap();
        let shared = SharedAccess::load(&path).unwrap();
        std::fs::write(&path, r#"{"t": {"read": ["bob"]}}"#).unwrap();
        shared.reload().unwrap();
        assert!(shared.rules().can_read("bob", "t"));
        std::fs::write(&path, r#"{"t": {"read": ["carol"]"#).unwrap();
        assert!(shared.reload().is_err());
        assert!(shared.rules().can_read("bob", "t"));
        std::fs::remove_file(&path).unwrap();
        assert!(shared.reload().is_err());
        assert!(shared.rules().can_read("bob", "t"));
        assert_eq!((shared.reloads(), shared.failed_reloads()), (1, 2));
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
