use super::*;
use serde_json::json;

fn rules(json: Value) -> AccessRules {
    AccessRules::from_json(&json.to_string()).unwrap()
}

#[test]
fn write_and_read_are_separate_rights() {
    let rules =
        AccessRules::from_json(r#"{"audit.logs": {"write": ["alice"], "read": ["alice", "bob"]}}"#)
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
    let rules = rules(json!({"t": {"write": [{"user": "a", "fields": {"n": [1, 2.5, true]}}]}}));
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
    let rules = rules(json!({"t": {"read": [{"user": "p", "fields": {"tenant_id": ["avms"]}}]}}));
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
