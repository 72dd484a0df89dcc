//! `eventgate topics check DIR` on the built binary: a topics directory written for each case, the
//! exit code and the lines that name the topic, version, field and rule. No service is needed.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};

/// A directory of its own under the system's temporary directory, removed when dropped.
struct Dir(PathBuf);

impl Dir {
    fn new(case: &str, files: &[(&str, Value)]) -> Dir {
        let root = std::env::temp_dir().join(format!(
            "eventgate-topics-check-{}-{case}",
            std::process::id()
        ));
        // A leftover of an earlier run with the same pid must not leak into this case.
        let _ = std::fs::remove_dir_all(&root);
        for (name, schema) in files {
            let path = root.join(name);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, serde_json::to_string_pretty(schema).expect("json"))
                .expect("write");
        }
        Dir(root)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Checked {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn check(dir: &Path) -> Checked {
    let Output {
        status,
        stdout,
        stderr,
    } = std::process::Command::new(env!("CARGO_BIN_EXE_eventgate"))
        .args(["topics", "check"])
        .arg(dir)
        .output()
        .expect("runs the binary");
    Checked {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Version 1 of the case's topic: closed, like the shipped topics.
fn v1() -> Value {
    json!({
        "type": "object",
        "required": ["event_name"],
        "properties": {
            "event_name": {"type": "string", "maxLength": 200},
            "customer_id": {"type": ["integer", "string"]}
        },
        "additionalProperties": false
    })
}

/// Version 1 with `edit` applied to its properties and required list.
fn v2(edit: impl FnOnce(&mut Value)) -> Value {
    let mut schema = v1();
    edit(&mut schema);
    schema
}

#[test]
fn a_compatible_version_passes() {
    let new = v2(|s| s["properties"]["country"] = json!({"type": "string"}));
    let dir = Dir::new(
        "compatible",
        &[
            ("audit.logs/1.json", v1()),
            ("audit.logs/2.json", new),
            ("web.events.json", json!({"type": "object"})),
        ],
    );
    let checked = check(&dir.0);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(
        checked
            .stdout
            .contains("audit.logs: versions 1-2 (backward)"),
        "{}",
        checked.stdout
    );
    assert!(
        checked.stdout.contains("2 topic(s), 3 version(s)"),
        "{}",
        checked.stdout
    );
}

#[test]
fn a_new_required_property_fails_naming_topic_version_field_and_rule() {
    let new = v2(|s| {
        s["properties"]["country"] = json!({"type": "string"});
        s["required"] = json!(["event_name", "country"]);
    });
    let dir = Dir::new(
        "required",
        &[("audit.logs/1.json", v1()), ("audit.logs/2.json", new)],
    );
    let checked = check(&dir.0);
    assert_eq!(checked.code, Some(1), "{}", checked.stderr);
    assert!(
        checked.stderr.contains(
            "audit.logs: version 2 breaks backward compatibility with version 1 at country: new \
             required property"
        ),
        "{}",
        checked.stderr
    );
}

#[test]
fn a_narrowed_type_fails() {
    let new = v2(|s| s["properties"]["customer_id"] = json!({"type": "integer"}));
    let dir = Dir::new(
        "narrowed",
        &[("audit.logs/1.json", v1()), ("audit.logs/2.json", new)],
    );
    let checked = check(&dir.0);
    assert_eq!(checked.code, Some(1), "{}", checked.stderr);
    assert!(
        checked.stderr.contains(
            "at customer_id: type narrowed from [integer, string] to integer (version 2 could not \
             read every event of version 1)"
        ),
        "{}",
        checked.stderr
    );
}

#[test]
fn each_kind_of_incompatible_change_fails_under_its_rule() {
    let with_rule = |mut schema: Value, rule: &str| {
        schema["x-eventgate"] = json!({"compatibility": rule});
        schema
    };
    // (case, rule, v2, what the line must say)
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        (
            "maxlength",
            "backward",
            v2(|s| s["properties"]["event_name"]["maxLength"] = json!(100)),
            "at event_name: maxLength lowered from 200 to 100",
        ),
        (
            "closed",
            "forward",
            v2(|s| s["properties"]["country"] = json!({"type": "string"})),
            "breaks forward compatibility with version 1 at country: property added that the old \
             version does not allow",
        ),
        (
            "widened",
            "full",
            v2(|s| s["properties"]["event_name"]["maxLength"] = json!(400)),
            "breaks full compatibility with version 1 at event_name: maxLength raised from 200 to \
             400 (version 1 could not read every event of version 2)",
        ),
        (
            "oneof",
            "backward",
            v2(|s| {
                s["properties"]["customer_id"] =
                    json!({"oneOf": [{"type": "integer"}, {"type": "string"}]})
            }),
            "at customer_id: oneOf added; oneOf is not analysed",
        ),
    ];
    for (case, rule, new, expected) in cases {
        let dir = Dir::new(
            case,
            &[("t/1.json", v1()), ("t/2.json", with_rule(new, rule))],
        );
        let checked = check(&dir.0);
        assert_eq!(checked.code, Some(1), "{case}: {}", checked.stderr);
        assert!(
            checked.stderr.contains(expected),
            "{case}: {}",
            checked.stderr
        );
    }
    // Under `none` the same changes pass.
    let new = v2(|s| s["properties"]["customer_id"] = json!({"type": "integer"}));
    let dir = Dir::new(
        "none",
        &[("t/1.json", v1()), ("t/2.json", with_rule(new, "none"))],
    );
    let checked = check(&dir.0);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(
        checked.stdout.contains("t: versions 1-2 (none)"),
        "{}",
        checked.stdout
    );
}

#[test]
fn broken_files_and_gaps_are_reported_with_the_other_topics() {
    let dir = Dir::new(
        "broken",
        &[
            ("good.json", v1()),
            ("gap/1.json", v1()),
            ("gap/3.json", v1()),
            ("bad.json", json!({"type": 5})),
        ],
    );
    let checked = check(&dir.0);
    assert_eq!(checked.code, Some(1), "{}", checked.stderr);
    assert!(
        checked.stdout.contains("good: version 1"),
        "{}",
        checked.stdout
    );
    assert!(
        checked
            .stderr
            .contains("topic gap: versions must be numbered"),
        "{}",
        checked.stderr
    );
    assert!(checked.stderr.contains("bad.json"), "{}", checked.stderr);
    assert!(
        checked.stderr.contains("2 problem(s) in 2 of 3 topic(s)"),
        "{}",
        checked.stderr
    );
    // A directory that cannot be read is a usage error.
    assert_eq!(check(&dir.0.join("missing")).code, Some(2));
}

#[test]
fn the_repositorys_own_topics_pass() {
    let topics = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics");
    let checked = check(&topics);
    assert_eq!(checked.code, Some(0), "{}", checked.stderr);
    assert!(
        checked.stdout.contains("audit.logs: version 1 (backward)"),
        "{}",
        checked.stdout
    );
}
