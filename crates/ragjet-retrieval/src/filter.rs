//! Metadata filters with the semantics of LlamaIndex `MetadataFilters`.
//!
//! The types deserialise from the JSON LlamaIndex produces
//! (`MetadataFilters.model_dump()`):
//! `{"filters": [{"key": "k", "value": 1, "operator": ">="}, {"filters": [...], "condition": "or"}], "condition": "and"}`.
//! `operator` defaults to `==` and `condition` to `and`.
//!
//! # Rules for missing keys and type mismatches
//!
//! A filter never errors on *data*; it errors only on a *malformed filter*
//! ([`MetadataFilters::validate`], called by every search):
//!
//! * a missing key, or a stored `null`, matches **only** `is_empty`;
//!   every other operator — `!=` and `nin` included — is a no-match;
//! * comparing values of different types (a string with a number, a list
//!   with a scalar where a scalar is expected) is a no-match, again for `!=`
//!   and `nin` too: "type mismatch never matches" is the single rule;
//! * `>`/`>=`/`<`/`<=` order numbers numerically and strings by byte order;
//!   booleans and lists are not ordered (no-match);
//! * `in` / `nin` need a stored scalar and a list filter value: the stored
//!   value is (not) equal to some list item; items of another type simply
//!   never equal it;
//! * `contains` needs a stored list: some element equals the filter value;
//!   `any` / `all` need a stored list and a list filter value;
//! * `text_match` is a case-sensitive substring test on a stored string,
//!   `text_match_insensitive` the same after lowercasing;
//! * `is_empty` matches a missing key, `null`, `""` and `[]`;
//! * an empty group matches everything (no filtering), whatever its
//!   condition; `not` matches when no member matches.

use serde::{Deserialize, Serialize};

use crate::error::{Result, RetrievalError};
use crate::types::{Metadata, MetadataValue};

/// A comparison operator (the strings are LlamaIndex's `FilterOperator` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum FilterOperator {
    /// `==`
    #[default]
    #[serde(rename = "==")]
    Eq,
    /// `!=`
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
    /// stored scalar is in the list
    #[serde(rename = "in")]
    In,
    /// stored scalar is not in the list
    #[serde(rename = "nin")]
    Nin,
    /// stored list shares an element with the list
    #[serde(rename = "any")]
    Any,
    /// stored list holds every element of the list
    #[serde(rename = "all")]
    All,
    /// stored list contains the value
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct MetadataFilters {
    /// The members.
    pub filters: Vec<FilterNode>,
    /// How they combine, `and` if absent.
    #[serde(default)]
    pub condition: FilterCondition,
}

impl MetadataFilters {
    /// A group of single filters joined by `condition`.
    pub fn new(filters: Vec<MetadataFilter>, condition: FilterCondition) -> Self {
        MetadataFilters {
            filters: filters.into_iter().map(FilterNode::Filter).collect(),
            condition,
        }
    }

    /// Parses LlamaIndex's JSON form.
    pub fn from_json(json: &str) -> Result<Self> {
        let f: Self = serde_json::from_str(json)
            .map_err(|e| RetrievalError::InvalidFilter(format!("bad filter JSON: {e}")))?;
        f.validate()?;
        Ok(f)
    }

    /// Checks the filter's own shape (operators given the value type they
    /// need). Data never makes a valid filter fail; see the module docs.
    pub fn validate(&self) -> Result<()> {
        for node in &self.filters {
            match node {
                FilterNode::Group(g) => g.validate()?,
                FilterNode::Filter(f) => validate_one(f)?,
            }
        }
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
    /// bumped if the encoding ever changes.
    pub fn canonical_key(&self) -> Vec<u8> {
        let mut out = vec![CANONICAL_KEY_VERSION];
        encode_group(self, &mut out);
        out
    }

    /// Whether an entry with this metadata passes the filter.
    pub fn matches(&self, metadata: &Metadata) -> bool {
        if self.filters.is_empty() {
            return true;
        }
        let mut each = self.filters.iter().map(|n| match n {
            FilterNode::Group(g) => g.matches(metadata),
            FilterNode::Filter(f) => matches_one(f, metadata.get(&f.key)),
        });
        match self.condition {
            FilterCondition::And => each.all(|m| m),
            FilterCondition::Or => each.any(|m| m),
            FilterCondition::Not => !each.any(|m| m),
        }
    }
}

/// First byte of every [`MetadataFilters::canonical_key`].
pub const CANONICAL_KEY_VERSION: u8 = 1;

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

fn is_scalar(v: &MetadataValue) -> bool {
    matches!(
        v,
        MetadataValue::Bool(_) | MetadataValue::Number(_) | MetadataValue::String(_)
    )
}

fn validate_one(f: &MetadataFilter) -> Result<()> {
    use FilterOperator::*;
    let v = &f.value;
    let ok = match f.operator {
        Eq | Ne | Contains => is_scalar(v),
        Gt | Gte | Lt | Lte => matches!(v, MetadataValue::Number(_) | MetadataValue::String(_)),
        In | Nin | Any | All => {
            matches!(v, MetadataValue::List(items) if items.iter().all(is_scalar))
        }
        TextMatch | TextMatchInsensitive => matches!(v, MetadataValue::String(_)),
        IsEmpty => true,
    };
    if ok {
        Ok(())
    } else {
        Err(RetrievalError::InvalidFilter(format!(
            "operator {:?} on key {:?} cannot take value {:?}",
            f.operator, f.key, f.value
        )))
    }
}

/// Same-type equality of scalars; anything else is unequal.
fn scalar_eq(a: &MetadataValue, b: &MetadataValue) -> bool {
    match (a, b) {
        (MetadataValue::Bool(x), MetadataValue::Bool(y)) => x == y,
        (MetadataValue::Number(x), MetadataValue::Number(y)) => x == y,
        (MetadataValue::String(x), MetadataValue::String(y)) => x == y,
        _ => false,
    }
}

fn ordering(a: &MetadataValue, b: &MetadataValue) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (MetadataValue::Number(x), MetadataValue::Number(y)) => x.partial_cmp(y),
        (MetadataValue::String(x), MetadataValue::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

fn matches_one(f: &MetadataFilter, stored: Option<&MetadataValue>) -> bool {
    use std::cmp::Ordering::*;
    use FilterOperator as Op;
    let stored = match stored {
        None | Some(MetadataValue::Null) => return f.operator == Op::IsEmpty,
        Some(s) => s,
    };
    let same_kind = std::mem::discriminant(stored) == std::mem::discriminant(&f.value);
    match f.operator {
        Op::Eq => scalar_eq(stored, &f.value),
        Op::Ne => is_scalar(stored) && same_kind && !scalar_eq(stored, &f.value),
        Op::Gt => ordering(stored, &f.value) == Some(Greater),
        Op::Gte => matches!(ordering(stored, &f.value), Some(Greater | Equal)),
        Op::Lt => ordering(stored, &f.value) == Some(Less),
        Op::Lte => matches!(ordering(stored, &f.value), Some(Less | Equal)),
        Op::In | Op::Nin => {
            let MetadataValue::List(items) = &f.value else {
                return false;
            };
            if !is_scalar(stored) {
                return false;
            }
            let found = items.iter().any(|i| scalar_eq(stored, i));
            found == (f.operator == Op::In)
        }
        Op::Any | Op::All => match (stored, &f.value) {
            (MetadataValue::List(have), MetadataValue::List(want)) => {
                let has = |w: &MetadataValue| have.iter().any(|h| scalar_eq(h, w));
                if f.operator == Op::Any {
                    want.iter().any(has)
                } else {
                    want.iter().all(has)
                }
            }
            _ => false,
        },
        Op::Contains => match stored {
            MetadataValue::List(have) => have.iter().any(|h| scalar_eq(h, &f.value)),
            _ => false,
        },
        Op::TextMatch | Op::TextMatchInsensitive => match (stored, &f.value) {
            (MetadataValue::String(s), MetadataValue::String(pat)) => {
                if f.operator == Op::TextMatch {
                    s.contains(pat.as_str())
                } else {
                    s.to_lowercase().contains(&pat.to_lowercase())
                }
            }
            _ => false,
        },
        Op::IsEmpty => match stored {
            MetadataValue::String(s) => s.is_empty(),
            MetadataValue::List(l) => l.is_empty(),
            _ => false,
        },
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
        let meta: Metadata = [("x".to_string(), MetadataValue::Number(1.0))].into();
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
