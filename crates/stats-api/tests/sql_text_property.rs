//! No client text becomes SQL text: for any query that plans, with values, cursors and a reader's
//! restriction full of SQL, the generated statement contains none of it (it is all in bind parameters).

use std::path::Path;

use eventgate_core::access::AccessRules;
use eventgate_core::auth::Principal;
use eventgate_core::catalogue::Catalogue;
use eventgate_core::query::{self, CursorKey, QueryLimits, QueryRequest};
use eventgate_stats_api::db::query_sql::page_sql;
use proptest::prelude::*;
use serde_json::{json, Value};

/// Every client string carries it; the SQL text must never contain it.
const MARK: &str = "ZQX";

fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'; DROP TABLE events; --".to_owned()),
        Just("' OR '1'='1".to_owned()),
        Just("$1) OR (1=1".to_owned()),
        Just("\\'; DELETE FROM events; --".to_owned()),
        any::<String>(),
    ]
    .prop_map(|s| format!("{MARK}{}", s.replace('\0', "")))
}

fn filter() -> impl Strategy<Value = (String, Value)> {
    let field = prop::sample::select(vec![
        "tenant_id",
        "source_app",
        "environment",
        "additional_info.region",
        "payload.additional_info.owner",
        "producer",
    ]);
    let op = prop::sample::select(vec![
        "",
        "_in",
        "_ne",
        "_gt",
        "_lte",
        "_contains",
        "_between",
    ]);
    (field, op, hostile(), hostile()).prop_map(|(field, op, a, b)| {
        let value = match op {
            "_in" => json!([a, b]),
            "_between" => json!([a, b]),
            _ => json!(a),
        };
        (format!("{field}{op}"), value)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn client_strings_never_reach_the_sql_text(
        filters in prop::collection::btree_map(filter().prop_map(|(k, _)| k), filter().prop_map(|(_, v)| v), 0..5),
        sort in prop::sample::select(vec!["-timestamp", "tenant_id", "-source_app", "additional_info.region"]),
        restriction in hostile(),
        page in 0usize..2,
    ) {
        let catalogue = Catalogue::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/topics"))
            .expect("topics");
        let topic = catalogue.get("public.cps.za.runs").expect("runs");
        let rules = AccessRules::from_json(
            &json!({"public.cps.za.runs": {"read": [{"user": "p", "fields": {"tenant_id": [restriction]}}]}}).to_string(),
        )
        .expect("rules");
        let restrictions = rules
            .read_access(&Principal::user("p"), &topic.name)
            .expect("reads")
            .read_filters(&topic.fields, "p", &topic.name)
            .expect("expressible");
        let key = CursorKey::new(b"a-secret-for-this-test");
        let mut request = QueryRequest {
            filter: filters.into_iter().collect(),
            sort: Some(vec![sort.to_owned()]),
            cursor: None,
            limit: Some(2),
            ..QueryRequest::default()
        };
        let plan = query::plan_restricted(&topic.name, &request, &topic.fields, &QueryLimits::default(), &key, &restrictions);
        let Ok(mut plan) = plan else { return Ok(()) };
        if page == 1 {
            // The second page: a cursor made from an event full of hostile text.
            let event = eventgate_core::envelope::Event {
                id: uuid::Uuid::now_v7(),
                topic: topic.name.clone(),
                timestamp: time::OffsetDateTime::now_utc(),
                producer: format!("{MARK}'; --"),
                payload: json!({"tenant_id": format!("{MARK}' OR 1=1"), "source_app": format!("{MARK}$1"),
                                "additional_info": {"region": format!("{MARK}\\")}}),
            };
            request.cursor = Some(plan.next_cursor(&event, &key));
            plan = query::plan_restricted(&topic.name, &request, &topic.fields, &QueryLimits::default(), &key, &restrictions)
                .expect("the cursor of this query");
            prop_assert!(plan.after.is_some());
        }
        let sql = page_sql(&topic.name, &plan).sql;
        prop_assert!(!sql.contains(MARK), "client text in SQL: {}", sql);
    }
}
