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
