use proptest::prelude::*;
use ragjet_retrieval::{
    FilterCondition, FilterNode, FilterOperator, Metadata, MetadataFilter, MetadataFilters,
    MetadataValue,
};
use serde_json::{json, Value};

/// An independent, deliberately plain evaluator over `serde_json::Value`,
/// written from the rules in the `filter` module docs.
fn naive(filters: &Value, meta: &Value) -> bool {
    let members = filters["filters"].as_array().unwrap();
    if members.is_empty() {
        return true;
    }
    let results: Vec<bool> = members
        .iter()
        .map(|m| {
            if m.get("filters").is_some() {
                naive(m, meta)
            } else {
                naive_one(
                    m["key"].as_str().unwrap(),
                    m["operator"].as_str().unwrap(),
                    &m["value"],
                    meta,
                )
            }
        })
        .collect();
    match filters["condition"].as_str().unwrap() {
        "and" => results.iter().all(|r| *r),
        "or" => results.iter().any(|r| *r),
        _ => !results.iter().any(|r| *r),
    }
}

fn same_scalar(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Bool(x), Value::Bool(y)) => x == y,
        _ => false,
    }
}

fn naive_one(key: &str, op: &str, value: &Value, meta: &Value) -> bool {
    let stored = meta.get(key).unwrap_or(&Value::Null);
    if stored.is_null() {
        return op == "is_empty";
    }
    let scalar = |v: &Value| v.is_number() || v.is_string() || v.is_boolean();
    let cmp = |want: &[std::cmp::Ordering]| match (stored, value) {
        (Value::Number(a), Value::Number(b)) => want.contains(
            &a.as_f64()
                .unwrap()
                .partial_cmp(&b.as_f64().unwrap())
                .unwrap(),
        ),
        (Value::String(a), Value::String(b)) => want.contains(&a.cmp(b)),
        _ => false,
    };
    use std::cmp::Ordering::*;
    match op {
        "==" => same_scalar(stored, value),
        "!=" => {
            scalar(stored)
                && std::mem::discriminant(stored) == std::mem::discriminant(value)
                && !same_scalar(stored, value)
        }
        ">" => cmp(&[Greater]),
        ">=" => cmp(&[Greater, Equal]),
        "<" => cmp(&[Less]),
        "<=" => cmp(&[Less, Equal]),
        "in" => {
            scalar(stored)
                && value
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| same_scalar(stored, v))
        }
        "nin" => {
            scalar(stored)
                && !value
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|v| same_scalar(stored, v))
        }
        "contains" => stored
            .as_array()
            .is_some_and(|a| a.iter().any(|v| same_scalar(v, value))),
        "any" => stored.as_array().is_some_and(|a| {
            value
                .as_array()
                .unwrap()
                .iter()
                .any(|w| a.iter().any(|v| same_scalar(v, w)))
        }),
        "all" => stored.as_array().is_some_and(|a| {
            value
                .as_array()
                .unwrap()
                .iter()
                .all(|w| a.iter().any(|v| same_scalar(v, w)))
        }),
        "text_match" => match (stored, value) {
            (Value::String(s), Value::String(p)) => s.contains(p.as_str()),
            _ => false,
        },
        "is_empty" => {
            stored.as_str() == Some("") || stored.as_array().is_some_and(|a| a.is_empty())
        }
        other => panic!("unknown op {other}"),
    }
}

fn scalar_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..4).prop_map(|x| json!(x)),
        (0i64..4).prop_map(|x| json!(x as f64 + 0.5)),
        prop::sample::select(vec!["", "a", "b", "ab", "ba"]).prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
    ]
}

fn stored_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => scalar_value(),
        1 => Just(Value::Null),
        2 => prop::collection::vec(scalar_value(), 0..3).prop_map(Value::Array),
    ]
}

fn meta_strategy() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(vec!["x", "y", "z"]),
        stored_value(),
        0..3,
    )
    .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// A filter that passes `validate` (value type fits the operator).
fn leaf() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["x", "y", "z", "missing"]);
    let list = prop::collection::vec(scalar_value(), 0..3).prop_map(Value::Array);
    let ord = prop_oneof![
        (0i64..4).prop_map(|x| json!(x)),
        prop::sample::select(vec!["a", "b"]).prop_map(|s| json!(s))
    ];
    let text = prop::sample::select(vec!["", "a", "b", "ab"]).prop_map(|s| json!(s));
    prop_oneof![
        (
            key.clone(),
            prop::sample::select(vec!["==", "!=", "contains"]),
            scalar_value()
        ),
        (
            key.clone(),
            prop::sample::select(vec![">", ">=", "<", "<="]),
            ord
        ),
        (
            key.clone(),
            prop::sample::select(vec!["in", "nin", "any", "all"]),
            list
        ),
        (key.clone(), Just("text_match"), text),
        (key, Just("is_empty"), Just(Value::Null)),
    ]
    .prop_map(|(k, op, v)| json!({"key": k, "operator": op, "value": v}))
}

fn filters_strategy() -> impl Strategy<Value = Value> {
    let cond = prop::sample::select(vec!["and", "or", "not"]);
    let group = (prop::collection::vec(leaf(), 0..4), cond.clone())
        .prop_map(|(f, c)| json!({"filters": f, "condition": c}));
    group.prop_recursive(3, 16, 4, move |inner| {
        (
            prop::collection::vec(prop_oneof![leaf(), inner], 0..4),
            cond.clone(),
        )
            .prop_map(|(f, c)| json!({"filters": f, "condition": c}))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn filters_agree_with_naive_evaluator(f in filters_strategy(), meta in meta_strategy()) {
        let parsed = MetadataFilters::from_json(&f.to_string()).unwrap();
        let m: Metadata = serde_json::from_value(meta.clone()).unwrap();
        prop_assert_eq!(parsed.matches(&m), naive(&f, &meta), "filter {} meta {}", f, meta);
    }
}

#[test]
fn parses_llamaindex_json_with_defaults_and_nesting() {
    let j = r#"{"filters": [
        {"key": "author", "value": "ann"},
        {"filters": [{"key": "year", "value": 2020, "operator": ">="},
                     {"key": "tags", "value": "rust", "operator": "contains"}],
         "condition": "or"}
    ]}"#;
    let f = MetadataFilters::from_json(j).unwrap();
    assert_eq!(f.condition, FilterCondition::And);
    match &f.filters[0] {
        FilterNode::Filter(MetadataFilter { operator, .. }) => {
            assert_eq!(*operator, FilterOperator::Eq)
        }
        other => panic!("expected a leaf, got {other:?}"),
    }
    let meta = |v: Value| -> Metadata { serde_json::from_value(v).unwrap() };
    assert!(f.matches(&meta(json!({"author": "ann", "year": 2021}))));
    assert!(f.matches(&meta(
        json!({"author": "ann", "year": 1999, "tags": ["go", "rust"]})
    )));
    assert!(!f.matches(&meta(json!({"author": "ann", "year": 1999}))));
    assert!(!f.matches(&meta(json!({"author": "bob", "year": 2021}))));
    // Round trip through serde keeps the LlamaIndex shape.
    let back: MetadataFilters = serde_json::from_str(&serde_json::to_string(&f).unwrap()).unwrap();
    assert_eq!(back, f);
}

#[test]
fn missing_keys_and_type_mismatches_never_match() {
    let meta: Metadata = serde_json::from_value(json!({"n": 3, "s": "3"})).unwrap();
    let one = |k: &str, op, v: MetadataValue| {
        MetadataFilters::new(vec![MetadataFilter::new(k, op, v)], FilterCondition::And)
            .matches(&meta)
    };
    assert!(!one("missing", FilterOperator::Ne, "x".into()));
    assert!(!one("missing", FilterOperator::Nin, vec!["x"].into()));
    assert!(one("missing", FilterOperator::IsEmpty, MetadataValue::Null));
    assert!(!one("n", FilterOperator::Eq, "3".into()));
    assert!(!one("n", FilterOperator::Ne, "3".into()));
    assert!(!one("s", FilterOperator::Gt, 1.0.into()));
    assert!(one("n", FilterOperator::Eq, 3.0.into()));
}

#[test]
fn malformed_filters_are_rejected() {
    for j in [
        r#"{"filters": [{"key": "a", "value": "x", "operator": "in"}]}"#,
        r#"{"filters": [{"key": "a", "value": [1], "operator": ">"}]}"#,
        r#"{"filters": [{"key": "a", "value": 1, "operator": "text_match"}]}"#,
        r#"{"filters": [{"key": "a", "value": 1, "operator": "like"}]}"#,
        r#"{"filters": [{"key": "a", "value": 1}], "condition": "xor"}"#,
        r#"not json"#,
    ] {
        assert!(MetadataFilters::from_json(j).is_err(), "{j}");
    }
}
