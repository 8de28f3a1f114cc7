//! Metadata filters with the semantics of LlamaIndex `MetadataFilters`.
//!
//! The types deserialise from the JSON LlamaIndex produces
//! (`MetadataFilters.model_dump()`):
//! `{"filters": [{"key": "k", "value": 1, "operator": ">="}, {"filters": [...], "condition": "or"}], "condition": "and"}`.
//! `operator` defaults to `==`, and `condition` to `and` (also when it is
//! `null`, as llama-index reads a `None` condition).
//!
//! # Semantics: llama-index-core's, exactly
//!
//! A filter selects exactly the entries llama-index-core's own
//! `build_metadata_filter_fn` (what its `SimpleVectorStore` runs) selects,
//! evaluating the Python expressions below on the stored value `m` and the
//! filter value `v` with Python's rules. The binding's test suite runs
//! every operator and condition over a grid of keys and values through
//! llama-index-core itself and compares.
//!
//! * A missing key or a stored `null` (`m is None`) matches `!=` and `nin`
//!   and `is_empty`, and nothing else.
//! * `is_empty`: `m is None or m == "" or m == []`.
//! * `==` / `!=`: Python equality. Numbers compare by value whatever their
//!   JSON spelling (`2020 == 2020.0`) and a boolean is the number 0 or 1
//!   (`True == 1`); lists are equal element by element; a string never
//!   equals a number. All numbers are held as f64, so integers beyond 2⁵³
//!   compare as their nearest f64 (Python compares them exactly).
//! * `>`, `>=`, `<`, `<=`: Python ordering. Numbers (booleans included)
//!   numerically, NaN unordered (every comparison false); strings by code
//!   point; lists lexicographically (the first unequal elements decide,
//!   else the shorter list is smaller).
//! * `in`: `m in v`; `nin`: `m not in v`; `contains`: `v in m`. For a list
//!   container, some element equals the item; for a string container the
//!   item must be a string and is a substring test (`"" in s` holds).
//! * `any` / `all`: `any(x in m for x in v)` / `all(...)`, iterating a list
//!   `v` by element and a string `v` by character, stopping at the first
//!   decisive item as Python does (`all` over an empty `v` holds).
//! * `text_match`: both strings, `v in m`; `text_match_insensitive` the
//!   same after Unicode lowercasing of both.
//! * A group combines its members with `and` (all), `or` (any) or `not`
//!   (none); an empty group matches everything, whatever its condition.
//!   Nested groups, which llama-index-core refuses, follow the same rules.
//!
//! Where Python raises `TypeError` for an entry (ordering a string against
//! a number, `text_match` on a number, `in` against a number, iterating a
//! number for `any`), llama-index fails the whole query. A search cannot
//! fail on data, so here that entry simply does not match, whatever the
//! conditions around the failing test (Python evaluates every member of a
//! group, so the error would have escaped any `not` or `or`). Every filter
//! that parses is valid: like llama-index's, it is judged only against
//! data.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RetrievalError};
use crate::types::{MetadataLookup, MetadataValue};

/// A comparison operator (the strings are LlamaIndex's `FilterOperator` values).
///
/// # Examples
///
/// ```
/// use ragjet_retrieval::{FilterCondition, FilterOperator as Op, Metadata, MetadataFilter, MetadataFilters};
///
/// let meta: Metadata = [
///     ("tags".to_string(), vec!["rust", "db"].into()),
///     ("title".to_string(), "Intro to Rust".into()),
///     ("year".to_string(), 2024.into()),
/// ]
/// .into_iter()
/// .collect();
/// let test = |key: &str, op, value: ragjet_retrieval::MetadataValue| {
///     MetadataFilters::new(vec![MetadataFilter::new(key, op, value)], FilterCondition::And).matches(&meta)
/// };
/// // Python's semantics, operator by operator, as llama-index evaluates them.
/// assert!(test("tags", Op::Contains, "rust".into())); // "rust" in tags
/// assert!(test("tags", Op::Any, vec!["go", "db"].into())); // any(x in tags for x in v)
/// assert!(!test("tags", Op::All, vec!["go", "db"].into()));
/// assert!(test("year", Op::In, vec![2023, 2024].into()));
/// assert!(test("title", Op::TextMatchInsensitive, "rust".into()));
/// assert!(test("missing", Op::Ne, 1.into())); // a missing key matches != and nin only
/// assert!(!test("title", Op::Gt, 3.into())); // str > int raises in Python: no match here
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum FilterOperator {
    /// `==`
    #[default]
    #[serde(rename = "==")]
    Eq,
    /// `!=` (also matches a missing key)
    #[serde(rename = "!=")]
    Ne,
    /// `>`
    #[serde(rename = ">")]
    Gt,
    /// `>=`
    #[serde(rename = ">=")]
    Gte,
    /// `<`
    #[serde(rename = "<")]
    Lt,
    /// `<=`
    #[serde(rename = "<=")]
    Lte,
    /// `m in v`: the stored value equals an item of the list (or is a
    /// substring of the string)
    #[serde(rename = "in")]
    In,
    /// `m not in v` (also matches a missing key)
    #[serde(rename = "nin")]
    Nin,
    /// some item of the value is in the stored list (or string)
    #[serde(rename = "any")]
    Any,
    /// every item of the value is in the stored list (or string)
    #[serde(rename = "all")]
    All,
    /// `v in m`: the stored list holds the value (or the stored string
    /// contains it)
    #[serde(rename = "contains")]
    Contains,
    /// stored string contains the value (case-sensitive)
    #[serde(rename = "text_match")]
    TextMatch,
    /// stored string contains the value, ignoring case
    #[serde(rename = "text_match_insensitive")]
    TextMatchInsensitive,
    /// key missing, null, empty string or empty list
    #[serde(rename = "is_empty")]
    IsEmpty,
}

/// How the members of a group combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FilterCondition {
    /// every member matches
    #[default]
    And,
    /// at least one member matches
    Or,
    /// no member matches
    Not,
}

/// One `key operator value` test.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetadataFilter {
    /// Metadata key.
    pub key: String,
    /// Value to compare with (`null` for `is_empty`).
    #[serde(default)]
    pub value: MetadataValue,
    /// Operator, `==` if absent.
    #[serde(default)]
    pub operator: FilterOperator,
}

impl MetadataFilter {
    /// A filter `key operator value`.
    pub fn new(
        key: impl Into<String>,
        operator: FilterOperator,
        value: impl Into<MetadataValue>,
    ) -> Self {
        MetadataFilter {
            key: key.into(),
            value: value.into(),
            operator,
        }
    }
}

/// A member of a group: a single filter or a nested group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FilterNode {
    /// A nested group (tried first: it has a `filters` field).
    Group(MetadataFilters),
    /// A single test.
    Filter(MetadataFilter),
}

/// A group of filters combined by a condition; groups nest.
///
/// # Examples
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ragjet_retrieval::{Entry, FilterCondition, FilterOperator, FlatConfig, FlatIndex, MetadataFilter,
///     MetadataFilters, Metric, VectorIndex};
///
/// let mut index = FlatIndex::new(FlatConfig::new(2, Metric::Cosine))?;
/// index.upsert(vec![
///     Entry::new("old", vec![1.0, 0.0]).with_meta("year", 2019).with_meta("lang", "en"),
///     Entry::new("new", vec![0.9, 0.1]).with_meta("year", 2024).with_meta("lang", "en"),
///     Entry::new("fr", vec![0.8, 0.2]).with_meta("year", 2024).with_meta("lang", "fr"),
/// ])?;
/// // year >= 2020 AND lang == "en", built in code...
/// let recent_en = MetadataFilters::new(
///     vec![
///         MetadataFilter::new("year", FilterOperator::Gte, 2020),
///         MetadataFilter::new("lang", FilterOperator::Eq, "en"),
///     ],
///     FilterCondition::And,
/// );
/// let hits = index.search(&[1.0, 0.0], 10, Some(&recent_en))?;
/// assert_eq!(hits.iter().map(|h| h.id.as_str()).collect::<Vec<_>>(), ["new"]);
///
/// // ...or read from the JSON LlamaIndex's `MetadataFilters.model_dump()` gives.
/// let json = r#"{"filters": [{"key": "year", "value": 2024, "operator": "=="},
///                            {"key": "lang", "value": ["fr", "de"], "operator": "in"}],
///                "condition": "or"}"#;
/// let either = MetadataFilters::from_json(json)?;
/// assert_eq!(index.ids_matching(Some(&either))?.len(), 2);
/// // The canonical key ignores member order, so caches keyed on it agree.
/// let swapped = MetadataFilters::new(
///     vec![
///         MetadataFilter::new("lang", FilterOperator::Eq, "en"),
///         MetadataFilter::new("year", FilterOperator::Gte, 2020),
///     ],
///     FilterCondition::And,
/// );
/// assert_eq!(recent_en.canonical_key(), swapped.canonical_key());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetadataFilters {
    /// The members.
    pub filters: Vec<FilterNode>,
    /// How they combine, `and` if absent or `null`.
    #[serde(default, deserialize_with = "condition_or_and")]
    pub condition: FilterCondition,
}

/// `null` reads as `and`, as llama-index's `condition or AND` does.
fn condition_or_and<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<FilterCondition, D::Error> {
    Ok(Option::<FilterCondition>::deserialize(deserializer)?.unwrap_or_default())
}

impl MetadataFilters {
    /// A group of single filters joined by `condition`.
    pub fn new(filters: Vec<MetadataFilter>, condition: FilterCondition) -> Self {
        MetadataFilters {
            filters: filters.into_iter().map(FilterNode::Filter).collect(),
            condition,
        }
    }

    /// Parses LlamaIndex's JSON form; JSON of another shape, an unknown
    /// operator or an unknown condition is [`RetrievalError::InvalidFilter`].
    pub fn from_json(json: &str) -> Result<Self> {
        serde_json::from_str(json)
            .map_err(|e| RetrievalError::InvalidFilter(format!("bad filter JSON: {e}")))
    }

    /// Always `Ok`: as in llama-index-core, every well-formed filter is
    /// valid and only meets data (a value that cannot be compared with
    /// what an entry stores makes that entry not match; see the module
    /// docs). Kept so that callers checking filters up front need not
    /// change if a check is ever needed.
    pub fn validate(&self) -> Result<()> {
        Ok(())
    }

    /// A lossless byte encoding of the filter in a canonical form, for use
    /// as (part of) a cache key: two filters get the same key only when
    /// they select the same entries on every possible metadata, by the
    /// rules of this module.
    ///
    /// Why not the JSON form: JSON has no NaN or infinity (serde_json
    /// writes both as `null`), so `x < inf` and `x < NaN` would share a
    /// key, and the order of a group's members would split one filter into
    /// many keys. Here:
    /// * every string and list is length-prefixed and every node tagged, so
    ///   no two different structures encode alike (nesting and operators
    ///   are part of the key);
    /// * numbers are keyed by their f64 bit pattern, except that `-0.0`
    ///   becomes `+0.0` (they compare equal, so no operator tells them
    ///   apart) and every NaN becomes one quiet NaN (every NaN compares
    ///   unequal and unordered with everything alike); `+inf` and `-inf`
    ///   keep their own patterns;
    /// * the members of every group are sorted by their encoding: `and`,
    ///   `or` and `not` (none of the members) do not depend on member
    ///   order. An empty group matches everything whatever its condition,
    ///   so its condition is not part of the key. List values keep their
    ///   order (not needed for equality, but lossless).
    ///
    /// The first byte is a format version ([`CANONICAL_KEY_VERSION`]),
    /// bumped when the encoding or the meaning of a filter changes, so that
    /// results cached on disk or in Redis under older rules are not served.
    pub fn canonical_key(&self) -> Vec<u8> {
        let mut out = vec![CANONICAL_KEY_VERSION];
        encode_group(self, &mut out);
        out
    }

    /// Whether an entry with this metadata passes the filter: whether
    /// llama-index-core's filter function returns `True` for it.
    pub fn matches(&self, metadata: &impl MetadataLookup) -> bool {
        self.verdict(metadata) == Some(true)
    }

    /// What Python gives for the group: `None` where it raises.
    fn verdict(&self, metadata: &impl MetadataLookup) -> Verdict {
        if self.filters.is_empty() {
            return Some(true);
        }
        let (mut any, mut all) = (false, true);
        for node in &self.filters {
            // An error in any member escapes the group, as the exception
            // would in Python (every member is evaluated there).
            let m = match node {
                FilterNode::Group(g) => g.verdict(metadata)?,
                FilterNode::Filter(f) => verdict_one(f, metadata.lookup(&f.key))?,
            };
            any |= m;
            all &= m;
        }
        Some(match self.condition {
            FilterCondition::And => all,
            FilterCondition::Or => any,
            FilterCondition::Not => !any,
        })
    }
}

/// First byte of every [`MetadataFilters::canonical_key`]. Version 2:
/// llama-index-core's semantics (version 1 keys were cached under rules
/// where `!=` on a missing key did not match).
pub const CANONICAL_KEY_VERSION: u8 = 2;

fn encode_len(n: usize, out: &mut Vec<u8>) {
    out.extend_from_slice(&(n as u64).to_le_bytes());
}

fn encode_group(g: &MetadataFilters, out: &mut Vec<u8>) {
    out.push(b'G');
    if g.filters.is_empty() {
        // Matches everything, whatever the condition.
        out.push(0);
        encode_len(0, out);
        return;
    }
    out.push(match g.condition {
        FilterCondition::And => 1,
        FilterCondition::Or => 2,
        FilterCondition::Not => 3,
    });
    let mut members: Vec<Vec<u8>> = g
        .filters
        .iter()
        .map(|n| {
            let mut b = Vec::new();
            match n {
                FilterNode::Group(g) => encode_group(g, &mut b),
                FilterNode::Filter(f) => encode_filter(f, &mut b),
            }
            b
        })
        .collect();
    members.sort_unstable();
    encode_len(members.len(), out);
    for m in members {
        // Each member is self-delimiting (tags and length prefixes), so
        // the concatenation is unambiguous.
        out.extend_from_slice(&m);
    }
}

fn encode_filter(f: &MetadataFilter, out: &mut Vec<u8>) {
    use FilterOperator::*;
    out.push(b'F');
    encode_len(f.key.len(), out);
    out.extend_from_slice(f.key.as_bytes());
    // Explicit codes, not the enum's discriminants: reordering the enum
    // must not change keys.
    out.push(match f.operator {
        Eq => 1,
        Ne => 2,
        Gt => 3,
        Gte => 4,
        Lt => 5,
        Lte => 6,
        In => 7,
        Nin => 8,
        Any => 9,
        All => 10,
        Contains => 11,
        TextMatch => 12,
        TextMatchInsensitive => 13,
        IsEmpty => 14,
    });
    encode_value(&f.value, out);
}

fn encode_value(v: &MetadataValue, out: &mut Vec<u8>) {
    match v {
        MetadataValue::Null => out.push(0),
        MetadataValue::Bool(b) => {
            out.push(1);
            out.push(u8::from(*b));
        }
        MetadataValue::Number(x) => {
            out.push(2);
            let canonical = if x.is_nan() {
                f64::NAN.to_bits()
            } else if *x == 0.0 {
                0.0f64.to_bits()
            } else {
                x.to_bits()
            };
            out.extend_from_slice(&canonical.to_le_bytes());
        }
        MetadataValue::String(s) => {
            out.push(3);
            encode_len(s.len(), out);
            out.extend_from_slice(s.as_bytes());
        }
        MetadataValue::List(items) => {
            out.push(4);
            encode_len(items.len(), out);
            for i in items {
                encode_value(i, out);
            }
        }
    }
}

/// The result of a Python expression: `Some(bool)`, or `None` where
/// Python raises `TypeError`.
type Verdict = Option<bool>;

/// A number, as Python sees a bool (`True == 1`).
fn number(v: &MetadataValue) -> Option<f64> {
    match v {
        MetadataValue::Number(x) => Some(*x),
        MetadataValue::Bool(b) => Some(f64::from(u8::from(*b))),
        _ => None,
    }
}

/// Python's `a == b` (which never raises).
fn py_eq(a: &MetadataValue, b: &MetadataValue) -> bool {
    use MetadataValue as V;
    match (a, b) {
        (V::Null, V::Null) => true,
        (V::String(x), V::String(y)) => x == y,
        (V::List(x), V::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| py_eq(p, q)),
        _ => matches!((number(a), number(b)), (Some(x), Some(y)) if x == y),
    }
}

/// Python's ordering of `a` and `b`: `None` where it raises, `Some(None)`
/// for unordered (NaN: every comparison is false).
fn py_cmp(a: &MetadataValue, b: &MetadataValue) -> Option<Option<std::cmp::Ordering>> {
    use MetadataValue as V;
    match (a, b) {
        // Byte order of UTF-8 is code point order, which Python uses.
        (V::String(x), V::String(y)) => Some(Some(x.as_str().cmp(y.as_str()))),
        (V::List(x), V::List(y)) => {
            // The first unequal pair decides, compared by the same operator.
            match x.iter().zip(y).find(|(p, q)| !py_eq(p, q)) {
                Some((p, q)) => py_cmp(p, q),
                None => Some(Some(x.len().cmp(&y.len()))),
            }
        }
        _ => match (number(a), number(b)) {
            (Some(x), Some(y)) => Some(x.partial_cmp(&y)),
            _ => None,
        },
    }
}

/// Python's `item in container`.
fn py_in(item: &MetadataValue, container: &MetadataValue) -> Verdict {
    match (container, item) {
        (MetadataValue::List(items), _) => Some(items.iter().any(|e| py_eq(e, item))),
        (MetadataValue::String(s), MetadataValue::String(sub)) => Some(s.contains(sub.as_str())),
        // A non-str in a str, or anything in a number, bool or None.
        _ => None,
    }
}

/// What `for x in v` yields: list items, or a string's characters.
fn py_iter(v: &MetadataValue) -> Option<Vec<MetadataValue>> {
    match v {
        MetadataValue::List(items) => Some(items.clone()),
        MetadataValue::String(s) => {
            Some(s.chars().map(|c| MetadataValue::String(c.into())).collect())
        }
        _ => None,
    }
}

/// One filter on the stored value, as llama-index-core's
/// `_process_filter_match` (and its `is_empty` test) evaluates it.
fn verdict_one(f: &MetadataFilter, stored: Option<&MetadataValue>) -> Verdict {
    use std::cmp::Ordering::*;
    use FilterOperator as Op;
    let stored = stored.filter(|s| !matches!(s, MetadataValue::Null));
    let Some(m) = stored else {
        return Some(matches!(f.operator, Op::Ne | Op::Nin | Op::IsEmpty));
    };
    let v = &f.value;
    let ordered =
        |want: &[std::cmp::Ordering]| py_cmp(m, v).map(|o| o.is_some_and(|o| want.contains(&o)));
    match f.operator {
        Op::Eq => Some(py_eq(m, v)),
        Op::Ne => Some(!py_eq(m, v)),
        Op::Gt => ordered(&[Greater]),
        Op::Gte => ordered(&[Greater, Equal]),
        Op::Lt => ordered(&[Less]),
        Op::Lte => ordered(&[Less, Equal]),
        Op::In => py_in(m, v),
        Op::Nin => py_in(m, v).map(|found| !found),
        Op::Contains => py_in(v, m),
        Op::TextMatch | Op::TextMatchInsensitive => match (m, v) {
            (MetadataValue::String(s), MetadataValue::String(pat)) => {
                Some(if f.operator == Op::TextMatch {
                    s.contains(pat.as_str())
                } else {
                    s.to_lowercase().contains(&pat.to_lowercase())
                })
            }
            _ => None,
        },
        Op::Any | Op::All => {
            let any = f.operator == Op::Any;
            for item in py_iter(v)? {
                // Python's any()/all() stop at the first decisive item, so a
                // later item that would raise is never reached.
                if py_in(&item, m)? == any {
                    return Some(any);
                }
            }
            Some(!any)
        }
        Op::IsEmpty => Some(match m {
            MetadataValue::String(s) => s.is_empty(),
            MetadataValue::List(l) => l.is_empty(),
            _ => false,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(key: &str, op: FilterOperator, v: impl Into<MetadataValue>) -> FilterNode {
        FilterNode::Filter(MetadataFilter::new(key, op, v))
    }

    fn group(cond: FilterCondition, members: Vec<FilterNode>) -> MetadataFilters {
        MetadataFilters {
            filters: members,
            condition: cond,
        }
    }

    /// serde_json writes ±inf and NaN as `null`, so the JSON form cannot
    /// tell `x < inf` from `x < NaN` (which match different entries); the
    /// canonical key does.
    #[test]
    fn infinities_and_nan_get_their_own_keys() {
        let lt = |x: f64| {
            MetadataFilters::new(
                vec![MetadataFilter::new("x", FilterOperator::Lt, x)],
                FilterCondition::And,
            )
        };
        let (inf, nan, ninf) = (lt(f64::INFINITY), lt(f64::NAN), lt(f64::NEG_INFINITY));
        assert_eq!(
            serde_json::to_string(&inf).unwrap(),
            serde_json::to_string(&nan).unwrap(),
            "the JSON form loses the difference"
        );
        let meta: crate::Metadata = [("x".to_string(), MetadataValue::Number(1.0))].into();
        assert_ne!(inf.matches(&meta), nan.matches(&meta));
        let keys = [
            inf.canonical_key(),
            nan.canonical_key(),
            ninf.canonical_key(),
        ];
        assert_ne!(keys[0], keys[1]);
        assert_ne!(keys[0], keys[2]);
        assert_ne!(keys[1], keys[2]);
        // Values no operator can tell apart share a key: every NaN, and
        // the two zeros.
        let other_nan = f64::from_bits(f64::NAN.to_bits() | 1).copysign(-1.0);
        assert!(other_nan.is_nan());
        assert_eq!(lt(other_nan).canonical_key(), keys[1]);
        assert_eq!(lt(-0.0).canonical_key(), lt(0.0).canonical_key());
        assert_ne!(
            lt(0.0).canonical_key(),
            lt(f64::MIN_POSITIVE).canonical_key()
        );
    }

    #[test]
    fn operators_values_and_nesting_are_part_of_the_key() {
        let a = one("k", FilterOperator::Eq, "v");
        let b = one("k", FilterOperator::Ne, "v");
        let c = one("k", FilterOperator::Eq, 1.0);
        let d = one("k", FilterOperator::Eq, "1");
        let flat = group(FilterCondition::And, vec![a.clone(), b.clone()]);
        let keys = [
            group(FilterCondition::And, vec![a.clone()]).canonical_key(),
            group(FilterCondition::And, vec![b.clone()]).canonical_key(),
            group(FilterCondition::And, vec![c]).canonical_key(),
            group(FilterCondition::And, vec![d]).canonical_key(),
            group(FilterCondition::Or, vec![a.clone()]).canonical_key(),
            group(FilterCondition::Not, vec![a.clone()]).canonical_key(),
            flat.canonical_key(),
            // Same leaves, nested differently.
            group(
                FilterCondition::And,
                vec![
                    a.clone(),
                    FilterNode::Group(group(FilterCondition::And, vec![b.clone()])),
                ],
            )
            .canonical_key(),
            group(FilterCondition::Or, vec![FilterNode::Group(flat.clone())]).canonical_key(),
            // Key and value boundaries cannot be shifted.
            group(
                FilterCondition::And,
                vec![one("kv", FilterOperator::Eq, "")],
            )
            .canonical_key(),
            group(
                FilterCondition::And,
                vec![one("k", FilterOperator::In, vec!["v"])],
            )
            .canonical_key(),
        ];
        for i in 0..keys.len() {
            for j in 0..i {
                assert_ne!(keys[i], keys[j], "filters {i} and {j} share a key");
            }
        }
    }

    #[test]
    fn member_order_does_not_change_the_key() {
        let a = one("a", FilterOperator::Gt, 3.0);
        let b = one("b", FilterOperator::TextMatch, "x");
        let inner = |m: Vec<FilterNode>| FilterNode::Group(group(FilterCondition::Or, m));
        for cond in [
            FilterCondition::And,
            FilterCondition::Or,
            FilterCondition::Not,
        ] {
            let x = group(
                cond,
                vec![a.clone(), b.clone(), inner(vec![a.clone(), b.clone()])],
            );
            let y = group(
                cond,
                vec![inner(vec![b.clone(), a.clone()]), b.clone(), a.clone()],
            );
            assert_eq!(x.canonical_key(), y.canonical_key(), "{cond:?}");
        }
        // Empty groups match everything, whatever their condition.
        let empty = |c| group(c, vec![]).canonical_key();
        assert_eq!(empty(FilterCondition::And), empty(FilterCondition::Not));
        assert_eq!(empty(FilterCondition::Or), empty(FilterCondition::Not));
        assert_eq!(empty(FilterCondition::And)[0], CANONICAL_KEY_VERSION);
    }
}
