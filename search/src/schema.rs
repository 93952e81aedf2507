//! Flattening an entry's JSON content into typed fields, and the per-index
//! rule that a field's type is fixed by the first value seen.
//!
//! `{"a": {"b": [1, 2]}, "c": "x"}` becomes `a.b = [1, 2]` (number) and
//! `c = ["x"]` (string). Arrays make a field multi-valued; arrays of objects
//! flatten every element into the same fields; `null` adds no value.
//! A string is a `date` when the field is first seen with an RFC 3339
//! timestamp or a `YYYY-MM-DD` day (a day is midnight UTC); later strings of
//! a date field must parse as dates, and a later date-looking string of a
//! string field stays a string.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use lattice_protocol::search::FieldType;
use serde_json::Value;

use crate::Limits;

/// One value of a field.
#[derive(Clone, Debug, PartialEq)]
pub enum FieldValue {
    String(String),
    Number(f64),
    Date(DateTime<Utc>),
    Boolean(bool),
}

/// An entry's content as typed fields, each with its values in order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FlatDoc {
    pub fields: BTreeMap<String, Vec<FieldValue>>,
}

/// Flattens `content` against the index's `fields`, answering the document
/// and the fields it would add (name and inferred type), or why the entry
/// is rejected (not an object, too deep, a type conflict naming the field
/// and both types, too many fields for `limits.max_fields`). Does not
/// change `fields`: the caller adds the new ones once the entry is applied.
pub fn flatten(
    content: &Value,
    fields: &BTreeMap<String, FieldType>,
    limits: &Limits,
) -> Result<(FlatDoc, Vec<(String, FieldType)>), String> {
    let _ = (content, fields, limits);
    unimplemented!("flatten")
}

/// Reads a JSON value given in a request (a filter value, a range bound)
/// as a value of a field of type `ty`, or says why it cannot be.
pub fn value_for(ty: FieldType, value: &Value) -> Result<FieldValue, String> {
    let _ = (ty, value);
    unimplemented!("value_for")
}
