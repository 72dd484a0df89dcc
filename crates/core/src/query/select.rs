//! Field selection (`"fields": [...]`, `fields=a,b` in the GET form): which members each event of a
//! query's answer keeps. Only the answer's shape changes: the events matched, their order, the cursor
//! and a restricted reader's mandatory filters are those of the same query without `fields` (the
//! restrictions are row filters, so selecting a field cannot widen what a reader sees).
//!
//! Every event keeps `id` and `topic`; `timestamp` and `producer` are kept when named; the payload
//! fields named are kept inside `payload` at their path (`info.region` → `{"info": {"region": …}}`), and
//! a field an event has no value for is absent from its payload.

use super::fields::{FieldCatalogue, FieldSource};
use super::planning::{too_many, unknown_field_message};
use super::value::shorten;
use crate::error::{ApiError, ErrorDetail};

/// What each event of an answer keeps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    pub timestamp: bool,
    pub producer: bool,
    /// Payload paths, in the order named, without duplicates.
    pub payload: Vec<Vec<String>>,
}

/// Resolves the names of `fields` against the topic's fields; an unknown name (or an empty list, or
/// too many names) is a 400 naming `fields[i]` (or `fields`), every problem at once.
pub fn selection(
    names: &[String],
    catalogue: &FieldCatalogue,
    max_fields: usize,
) -> Result<Selection, ApiError> {
    if names.is_empty() {
        return Err(ErrorDetail::validation(
            "fields",
            "name at least one field (or leave `fields` out for whole events)",
        )
        .into());
    }
    if names.len() > max_fields {
        return Err(
            ErrorDetail::validation("fields", too_many("fields", names.len(), max_fields)).into(),
        );
    }
    let mut selection = Selection::default();
    let mut errors = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let Some(field) = catalogue.lookup(name) else {
            let message = if name.is_empty() {
                "empty field name".to_owned()
            } else {
                unknown_field_message(name, name, catalogue)
            };
            errors.push(ErrorDetail::validation(
                format!("fields[{i}]"),
                format!("{message} (`{}`)", shorten(name, 200)),
            ));
            continue;
        };
        match &field.source {
            // `id` is always kept: it names the event.
            FieldSource::Id => {}
            FieldSource::Timestamp => selection.timestamp = true,
            FieldSource::Producer => selection.producer = true,
            FieldSource::Payload(path) => {
                if !selection.payload.contains(path) {
                    selection.payload.push(path.clone());
                }
            }
            // A filter's view into array elements; an answer keeps whole values.
            FieldSource::Items { array, .. } => errors.push(ErrorDetail::validation(
                format!("fields[{i}]"),
                format!(
                    "`{}` names values inside the elements of an array: select the array `{}`",
                    shorten(name, 200),
                    shorten(&array.join("."), 200)
                ),
            )),
        }
    }
    if errors.is_empty() {
        Ok(selection)
    } else {
        Err(ApiError::from_details(errors))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn catalogue() -> FieldCatalogue {
        FieldCatalogue::from_schema(&json!({
            "type": "object",
            "properties": {
                "event_name": {"type": "string"},
                "info": {"type": "object", "properties": {"region": {"type": "string"}}}
            }
        }))
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn envelope_and_payload_fields_are_resolved_once_each() {
        let selected = selection(
            &names(&["event_name", "timestamp", "info.region", "id", "event_name"]),
            &catalogue(),
            10,
        )
        .expect("valid");
        assert!(selected.timestamp && !selected.producer);
        assert_eq!(
            selected.payload,
            vec![
                vec!["event_name".to_owned()],
                vec!["info".into(), "region".into()]
            ]
        );
    }

    #[test]
    fn unknown_names_and_empty_lists_are_400s_naming_the_entry() {
        let error =
            selection(&names(&["event_name", "nope", ""]), &catalogue(), 10).expect_err("unknown");
        let fields: Vec<_> = error
            .details
            .iter()
            .map(|d| d.field.clone().unwrap_or_default())
            .collect();
        assert_eq!(fields, ["fields[1]", "fields[2]"]);
        assert!(error.details[0].message.contains("unknown field `nope`"));
        assert_eq!(error.status(), 400);
        let error = selection(&[], &catalogue(), 10).expect_err("empty");
        assert_eq!(error.details[0].field.as_deref(), Some("fields"));
        let error =
            selection(&names(&["event_name", "info"]), &catalogue(), 1).expect_err("too many");
        assert!(error.details[0].message.contains("too many"));
    }
}
