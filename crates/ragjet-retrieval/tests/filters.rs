use proptest::prelude::*;
use ragjet_retrieval::{
    FilterCondition, FilterNode, FilterOperator, Metadata, MetadataFilter, MetadataFilters,
    MetadataValue,
};
use serde_json::{json, Value};

/// An independent, deliberately plain evaluator over `serde_json::Value`,
/// written from the Python expressions of llama-index-core's
/// `build_metadata_filter_fn` (quoted in the comments). `None` stands for a
/// Python `TypeError`; an entry on which Python raises does not match.
fn naive(filters: &Value, meta: &Value) -> bool {
    naive_group(filters, meta) == Some(true)
}

fn naive_group(filters: &Value, meta: &Value) -> Option<bool> {
    let members = filters["filters"].as_array().unwrap();
    if members.is_empty() {
        return Some(true);
    }
    // Python builds the whole list of member results, so one TypeError
    // anywhere escapes the group.
    let mut results = Vec::new();
    for m in members {
        let r = if m.get("filters").is_some() {
            naive_group(m, meta)
        } else {
            naive_one(
                m["key"].as_str().unwrap(),
                m["operator"].as_str().unwrap(),
                &m["value"],
                meta,
            )
        };
        results.push(r?);
    }
    Some(match filters["condition"].as_str().unwrap_or("and") {
        "and" => results.iter().all(|r| *r),
        "or" => results.iter().any(|r| *r),
        _ => !results.iter().any(|r| *r),
    })
}

/// A Python number: int, float or bool.
fn num(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// `a == b`
fn py_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Null, Value::Null) => true,
        (Value::String(x), Value::String(y)) => x == y,
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && (0..x.len()).all(|i| py_eq(&x[i], &y[i]))
        }
        _ => match (num(a), num(b)) {
            (Some(x), Some(y)) => x == y,
            _ => false,
        },
    }
}

/// `a < b` (`op` "<"), `a <= b`, `a > b`, `a >= b`.
fn py_compare(a: &Value, op: &str, b: &Value) -> Option<bool> {
    match (a, b) {
        (Value::String(x), Value::String(y)) => Some(match op {
            "<" => x < y,
            "<=" => x <= y,
            ">" => x > y,
            _ => x >= y,
        }),
        (Value::Array(x), Value::Array(y)) => {
            for i in 0..x.len().min(y.len()) {
                if !py_eq(&x[i], &y[i]) {
                    return py_compare(&x[i], op, &y[i]);
                }
            }
            py_compare(&json!(x.len()), op, &json!(y.len()))
        }
        _ => {
            let (x, y) = (num(a)?, num(b)?);
            Some(match op {
                "<" => x < y,
                "<=" => x <= y,
                ">" => x > y,
                _ => x >= y,
            })
        }
    }
}

/// `item in container`
fn py_in(item: &Value, container: &Value) -> Option<bool> {
    match container {
        Value::Array(items) => Some(items.iter().any(|e| py_eq(e, item))),
        Value::String(s) => Some(s.contains(item.as_str()?)),
        _ => None,
    }
}

fn naive_one(key: &str, op: &str, value: &Value, meta: &Value) -> Option<bool> {
    let stored = meta.get(key).unwrap_or(&Value::Null);
    if op == "is_empty" {
        // metadata_value is None or metadata_value == "" or metadata_value == []
        return Some(stored.is_null() || py_eq(stored, &json!("")) || py_eq(stored, &json!([])));
    }
    if stored.is_null() {
        // return operator in (FilterOperator.NE, FilterOperator.NIN)
        return Some(op == "!=" || op == "nin");
    }
    match op {
        "==" => Some(py_eq(stored, value)),
        "!=" => Some(!py_eq(stored, value)),
        ">" | ">=" | "<" | "<=" => py_compare(stored, op, value),
        "in" => py_in(stored, value),
        "nin" => py_in(stored, value).map(|b| !b),
        "contains" => py_in(value, stored),
        "text_match" | "text_match_insensitive" => {
            let (s, v) = (stored.as_str()?, value.as_str()?);
            Some(if op == "text_match" {
                s.contains(v)
            } else {
                s.to_lowercase().contains(&v.to_lowercase())
            })
        }
        "any" | "all" => {
            // any(val in metadata_value for val in value), all(...)
            let items: Vec<Value> = match value {
                Value::Array(a) => a.clone(),
                Value::String(s) => s.chars().map(|c| json!(c.to_string())).collect(),
                _ => return None,
            };
            for item in &items {
                let found = py_in(item, stored)?;
                if op == "any" && found {
                    return Some(true);
                }
                if op == "all" && !found {
                    return Some(false);
                }
            }
            Some(op == "all")
        }
        other => panic!("unknown op {other}"),
    }
}

fn scalar_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        (0i64..4).prop_map(|x| json!(x)),
        (0i64..4).prop_map(|x| json!(x as f64)),
        (0i64..4).prop_map(|x| json!(x as f64 + 0.5)),
        prop::sample::select(vec!["", "a", "b", "ab", "ba", "A"]).prop_map(|s| json!(s)),
        any::<bool>().prop_map(|b| json!(b)),
    ]
}

/// Scalars, `null`, and lists (nested once) of them: every shape either
/// side of a filter can take.
fn any_value() -> impl Strategy<Value = Value> {
    let flat = prop_oneof![
        5 => scalar_value(),
        1 => Just(Value::Null),
    ];
    prop_oneof![
        4 => flat.clone(),
        2 => prop::collection::vec(flat.clone(), 0..3).prop_map(Value::Array),
        1 => prop::collection::vec(
            prop::collection::vec(flat, 0..2).prop_map(Value::Array),
            0..2
        )
        .prop_map(Value::Array),
    ]
}

fn meta_strategy() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(prop::sample::select(vec!["x", "y", "z"]), any_value(), 0..3)
        .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect()))
}

/// Any operator with any value: every filter that parses is valid.
fn leaf() -> impl Strategy<Value = Value> {
    let key = prop::sample::select(vec!["x", "y", "z", "missing"]);
    let op = prop::sample::select(vec![
        "==",
        "!=",
        ">",
        ">=",
        "<",
        "<=",
        "in",
        "nin",
        "any",
        "all",
        "contains",
        "text_match",
        "text_match_insensitive",
        "is_empty",
    ]);
    (key, op, any_value()).prop_map(|(k, op, v)| json!({"key": k, "operator": op, "value": v}))
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

/// The rules LlamaIndex users meet first, each against what
/// llama-index-core 0.14's `build_metadata_filter_fn` returns for it.
#[test]
fn llama_index_rules_for_missing_keys_types_and_empties() {
    let meta: Metadata = serde_json::from_value(json!({
        "n": 3, "f": 3.0, "s": "3", "b": true, "e": "", "l": [], "tags": ["x", "y"],
        "nil": null, "text": "Hello World"
    }))
    .unwrap();
    let one = |k: &str, op, v: MetadataValue| {
        MetadataFilters::new(vec![MetadataFilter::new(k, op, v)], FilterCondition::And)
            .matches(&meta)
    };
    use FilterOperator::*;
    // `metadata_value is None` → `operator in (NE, NIN)`.
    assert!(one("missing", Ne, "x".into()));
    assert!(one("missing", Nin, vec!["x"].into()));
    assert!(one("nil", Ne, 3.0.into()));
    assert!(!one("missing", Eq, MetadataValue::Null));
    assert!(!one("missing", Lt, 1.0.into()));
    // IS_EMPTY: None, "" or [].
    for k in ["missing", "nil", "e", "l"] {
        assert!(one(k, IsEmpty, MetadataValue::Null), "{k}");
    }
    assert!(!one("n", IsEmpty, MetadataValue::Null));
    // Python equality: 3 == 3.0, True == 1, "3" != 3.
    assert!(one("n", Eq, 3.0.into()) && one("f", Eq, 3i64.into()));
    assert!(one("b", Eq, 1.0.into()) && one("b", Gt, 0.5.into()));
    assert!(!one("s", Eq, 3.0.into()) && one("s", Ne, 3.0.into()));
    assert!(one("n", In, vec![1.0, 3.0].into()) && !one("n", Nin, vec![3.0].into()));
    assert!(one("s", Nin, vec![3.0].into()));
    // `in` a str is a substring test; CONTAINS on a str too.
    assert!(one("s", In, "123".into()) && one("text", Contains, "World".into()));
    assert!(one("tags", Contains, "x".into()) && !one("tags", Contains, "X".into()));
    // ANY / ALL over a list value, and over a str value's characters.
    assert!(one("tags", Any, vec!["q", "y"].into()) && !one("tags", All, vec!["x", "q"].into()));
    assert!(one("tags", All, "xy".into()) && one("n", All, Vec::<f64>::new().into()));
    // Lists compare and order as Python lists.
    assert!(one("tags", Eq, vec!["x", "y"].into()) && one("tags", Lt, vec!["x", "z"].into()));
    assert!(one("tags", Gt, vec!["x"].into()));
    // text_match is case-sensitive, the insensitive one lowercases both.
    assert!(!one("text", TextMatch, "hello".into()));
    assert!(one("text", TextMatchInsensitive, "hello WORLD".into()));
    // Where Python raises TypeError, the entry does not match, even under
    // `not` or `or` (the exception would escape them).
    assert!(!one("s", Gt, 1.0.into()) && !one("s", Lte, 1.0.into()));
    assert!(!one("n", TextMatch, "3".into()) && !one("n", In, 3.0.into()));
    assert!(!one("n", Nin, 3.0.into()) && !one("n", Contains, 3.0.into()));
    let raising = FilterNode::Filter(MetadataFilter::new("s", Gt, 1.0));
    let matching = FilterNode::Filter(MetadataFilter::new("n", Eq, 3.0));
    for cond in [
        FilterCondition::And,
        FilterCondition::Or,
        FilterCondition::Not,
    ] {
        let f = MetadataFilters {
            filters: vec![matching.clone(), raising.clone()],
            condition: cond,
        };
        assert!(!f.matches(&meta), "{cond:?}");
    }
    // Also from inside a nested group: nesting one group is transparent.
    let nested = MetadataFilters {
        filters: vec![FilterNode::Group(MetadataFilters {
            filters: vec![raising.clone()],
            condition: FilterCondition::And,
        })],
        condition: FilterCondition::Not,
    };
    assert!(!nested.matches(&meta));
    // any()/all() stop before an item that would raise.
    assert!(one(
        "text",
        Any,
        MetadataValue::List(vec!["World".into(), 1.0.into()])
    ));
    assert!(!one(
        "text",
        Any,
        MetadataValue::List(vec![1.0.into(), "World".into()])
    ));
}

#[test]
fn a_null_condition_reads_as_and() {
    let f = MetadataFilters::from_json(
        r#"{"filters": [{"key": "a", "value": 1}, {"key": "b", "value": 2}], "condition": null}"#,
    )
    .unwrap();
    assert_eq!(f.condition, FilterCondition::And);
}

#[test]
fn only_malformed_json_is_rejected() {
    for j in [
        r#"{"filters": [{"key": "a", "value": 1, "operator": "like"}]}"#,
        r#"{"filters": [{"key": "a", "value": 1}], "condition": "xor"}"#,
        r#"{"filters": [{"value": 1}]}"#,
        r#"{"filters": [{"key": "a", "value": {"x": 1}}]}"#,
        r#"not json"#,
    ] {
        assert!(MetadataFilters::from_json(j).is_err(), "{j}");
    }
    // Type combinations are judged against data, as in llama-index.
    for j in [
        r#"{"filters": [{"key": "a", "value": "x", "operator": "in"}]}"#,
        r#"{"filters": [{"key": "a", "value": [1], "operator": ">"}]}"#,
        r#"{"filters": [{"key": "a", "value": 1, "operator": "text_match"}]}"#,
    ] {
        assert!(MetadataFilters::from_json(j).is_ok(), "{j}");
    }
}
