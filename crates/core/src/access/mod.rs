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
mod tests;
