//! Planning steps that queries ([`super::plan()`]) and aggregates ([`super::aggregate::plan_aggregate`])
//! share, so that the same mistake gets the same message in both.

use super::fields::{FieldCatalogue, FieldDef, FieldType};
use super::value::shorten;
use crate::error::ErrorDetail;

/// At most this many field names are listed in an "unknown field" message.
const MAX_LISTED_NAMES: usize = 100;

/// `requested` as a number of rows or groups: the default when absent; 0 or more than `max_limit` is an
/// error at `limit` (and the default is used meanwhile).
pub(super) fn parse_limit(
    requested: Option<u64>,
    default_limit: u32,
    max_limit: u32,
    errors: &mut Vec<ErrorDetail>,
) -> u32 {
    parse_limit_at("limit", requested, default_limit, max_limit, errors)
}

/// [`parse_limit`] with errors at `at` (`page_size`, the same thing spelled as audit-log spells it).
pub(super) fn parse_limit_at(
    at: &str,
    requested: Option<u64>,
    default_limit: u32,
    max_limit: u32,
    errors: &mut Vec<ErrorDetail>,
) -> u32 {
    match requested {
        None => default_limit,
        Some(0) => {
            errors.push(ErrorDetail::validation(at, "must be at least 1"));
            default_limit
        }
        Some(n) if n > u64::from(max_limit) => {
            errors.push(ErrorDetail::validation(
                at,
                format!("must be at most {max_limit}"),
            ));
            default_limit
        }
        Some(n) => u32::try_from(n).unwrap_or(max_limit),
    }
}

/// The message for a list of `given` `what` where at most `max` are allowed.
pub(super) fn too_many(what: &str, given: usize, max: usize) -> String {
    format!("too many {what}: {given} given, at most {max} allowed")
}

/// Parses a client's list entry by entry, each knowing the entries parsed before it: more than `max`
/// entries is one error at `at` (and nothing is parsed); an entry that fails is an error at `at[i]`.
pub(super) fn parse_list<T>(
    at: &str,
    what: &str,
    entries: &[String],
    max: usize,
    errors: &mut Vec<ErrorDetail>,
    mut parse: impl FnMut(&str, &[T]) -> Result<T, String>,
) -> Vec<T> {
    if entries.len() > max {
        errors.push(ErrorDetail::validation(
            at,
            too_many(what, entries.len(), max),
        ));
        return Vec::new();
    }
    let mut parsed = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        match parse(entry, &parsed) {
            Ok(value) => parsed.push(value),
            Err(message) => errors.push(ErrorDetail::validation(format!("{at}[{i}]"), message)),
        }
    }
    parsed
}

/// The message for a field name (found in the client's `key`) that the topic does not have, with the
/// topic's field names.
pub(super) fn unknown_field_message(name: &str, key: &str, fields: &FieldCatalogue) -> String {
    let names = fields.names();
    let mut listed = names
        .iter()
        .take(MAX_LISTED_NAMES)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > MAX_LISTED_NAMES {
        listed.push_str(&format!(", … ({} more)", names.len() - MAX_LISTED_NAMES));
    }
    let origin = if name == key {
        String::new()
    } else {
        format!(" (in `{}`)", shorten(key, 200))
    };
    // `jobs.status` for `jobs[].status`: a path through an array is written with `[]`.
    let bare = name.strip_prefix("payload.").unwrap_or(name);
    let hint = names
        .iter()
        .find(|n| n.contains("[]") && n.replace("[]", "") == bare)
        .map(|n| format!("; did you mean `{n}` (a path through an array is written with `[]`)?"))
        .unwrap_or_default();
    format!(
        "unknown field `{}`{origin}{hint}; valid fields: {listed}",
        shorten(name, 200)
    )
}

/// A sort entry split into its direction (`-` first: descending) and what it names.
pub(super) fn sort_direction(entry: &str) -> (bool, &str) {
    match entry.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, entry),
    }
}

/// What a list of keys is for, in its error messages.
#[derive(Debug, Clone, Copy)]
pub(super) enum KeyList {
    Sort,
    GroupBy,
}

/// The field `name` as one more entry of a list of keys: a field of the topic, with comparable values,
/// not already among `chosen`.
pub(super) fn key_field<'a, 'b>(
    name: &str,
    fields: &'a FieldCatalogue,
    chosen: impl IntoIterator<Item = &'b FieldDef>,
    list: KeyList,
) -> Result<&'a FieldDef, String> {
    let field = fields
        .lookup(name)
        .ok_or_else(|| unknown_field_message(name, name, fields))?;
    let (verb, lacking, done) = match list {
        KeyList::Sort => ("sort by", "order", "sorted by"),
        KeyList::GroupBy => ("group by", "comparable value", "grouped by"),
    };
    if field.ty == FieldType::Other {
        return Err(format!(
            "cannot {verb} `{}`: objects, arrays and untyped values have no {lacking}",
            field.name
        ));
    }
    if field.is_array_item() {
        return Err(format!(
            "cannot {verb} `{}`: a field inside an array has one value per element, not one per \
             event; filter on it instead (a filter holds when some element's value passes)",
            field.name
        ));
    }
    if chosen.into_iter().any(|c| c.source == field.source) {
        return Err(format!("`{}` is {done} more than once", field.name));
    }
    Ok(field)
}
