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

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
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
    let Value::Object(object) = content else {
        return Err(format!(
            "content must be a JSON object, not {}",
            json_kind(content)
        ));
    };
    let mut flattener = Flattener {
        known: fields,
        added: BTreeMap::new(),
        doc: FlatDoc::default(),
        max_depth: limits.max_depth,
    };
    flattener.object("", object, 1)?;
    let Flattener { added, doc, .. } = flattener;
    let total = fields.len() + added.len();
    if !added.is_empty() && total > limits.max_fields {
        return Err(format!(
            "entry would give the index {total} fields, more than the limit of {}",
            limits.max_fields
        ));
    }
    Ok((doc, added.into_iter().collect()))
}

/// Walks one entry's content. New fields are kept apart from the index's
/// known ones so that a rejected entry leaves nothing behind.
struct Flattener<'a> {
    known: &'a BTreeMap<String, FieldType>,
    added: BTreeMap<String, FieldType>,
    doc: FlatDoc,
    max_depth: usize,
}

impl Flattener<'_> {
    /// `depth` counts the objects and arrays enclosing (and including) this one.
    fn object(
        &mut self,
        prefix: &str,
        object: &serde_json::Map<String, Value>,
        depth: usize,
    ) -> Result<(), String> {
        self.check_depth(depth)?;
        for (key, value) in object {
            if key.is_empty() {
                return Err(match prefix {
                    "" => "content has an empty key".to_string(),
                    _ => format!("content has an empty key under `{prefix}`"),
                });
            }
            // NUL separates a field's name from its value in engine keys.
            if key.contains('\0') {
                return Err(format!("content key {key:?} contains a NUL character"));
            }
            let path = match prefix {
                "" => key.clone(),
                _ => format!("{prefix}.{key}"),
            };
            self.value(&path, value, depth)?;
        }
        Ok(())
    }

    fn value(&mut self, path: &str, value: &Value, depth: usize) -> Result<(), String> {
        match value {
            Value::Null => Ok(()),
            Value::Object(object) => self.object(path, object, depth + 1),
            Value::Array(items) => {
                self.check_depth(depth + 1)?;
                // Elements share the array's path: arrays make a field
                // multi-valued, they do not add a level to its name.
                for item in items {
                    self.value(path, item, depth + 1)?;
                }
                Ok(())
            }
            Value::Bool(b) => self.push(path, FieldType::Boolean, FieldValue::Boolean(*b)),
            Value::Number(n) => {
                let n = n
                    .as_f64()
                    .ok_or_else(|| format!("field `{path}`: {n} is not a usable number"))?;
                self.push(path, FieldType::Number, FieldValue::Number(n))
            }
            Value::String(s) => match self.type_of(path) {
                Some(FieldType::Date) => match parse_date(s) {
                    Some(date) => self.push(path, FieldType::Date, FieldValue::Date(date)),
                    None => Err(conflict(path, FieldType::Date, FieldType::String)),
                },
                // A date-looking string of a string field stays a string.
                Some(FieldType::String) => {
                    self.push(path, FieldType::String, FieldValue::String(s.clone()))
                }
                Some(other) => Err(conflict(path, other, FieldType::String)),
                None => match parse_date(s) {
                    Some(date) => self.push(path, FieldType::Date, FieldValue::Date(date)),
                    None => self.push(path, FieldType::String, FieldValue::String(s.clone())),
                },
            },
        }
    }

    fn type_of(&self, path: &str) -> Option<FieldType> {
        self.known
            .get(path)
            .or_else(|| self.added.get(path))
            .copied()
    }

    fn push(&mut self, path: &str, ty: FieldType, value: FieldValue) -> Result<(), String> {
        match self.type_of(path) {
            Some(existing) if existing != ty => return Err(conflict(path, existing, ty)),
            Some(_) => {}
            None => {
                self.added.insert(path.to_string(), ty);
            }
        }
        self.doc
            .fields
            .entry(path.to_string())
            .or_default()
            .push(value);
        Ok(())
    }

    fn check_depth(&self, depth: usize) -> Result<(), String> {
        if depth > self.max_depth {
            return Err(format!(
                "content nests deeper than the limit of {} levels",
                self.max_depth
            ));
        }
        Ok(())
    }
}

fn conflict(path: &str, existing: FieldType, got: FieldType) -> String {
    format!(
        "type conflict: field `{path}` is a {} in this index, this entry has a {}",
        type_name(existing),
        type_name(got)
    )
}

/// The name of a field type as the API spells it.
pub fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Number => "number",
        FieldType::Date => "date",
        FieldType::Boolean => "boolean",
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a date: an RFC 3339 timestamp, or a `YYYY-MM-DD` day (midnight UTC).
pub fn parse_date(text: &str) -> Option<DateTime<Utc>> {
    let bytes = text.as_bytes();
    let is_day = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(i, b)| i == 4 || i == 7 || b.is_ascii_digit());
    if is_day {
        let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return Some(day.and_time(NaiveTime::MIN).and_utc());
    }
    // RFC 3339 needs at least `YYYY-MM-DDTHH:MM:SSZ`; the length check keeps
    // chrono's parser away from every ordinary word.
    if bytes.len() < 20 || !bytes[..4].iter().all(u8::is_ascii_digit) || bytes[4] != b'-' {
        return None;
    }
    DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|date| date.with_timezone(&Utc))
}

/// Reads a JSON value given in a request (a filter value, a range bound)
/// as a value of a field of type `ty`, or says why it cannot be.
///
/// Strings are read as the type too (`"12"` for a number, `"true"` for a
/// boolean), because query terms and range bounds arrive as text.
pub fn value_for(ty: FieldType, value: &Value) -> Result<FieldValue, String> {
    let fail = || format!("{value} is not a {}", type_name(ty));
    match (ty, value) {
        (FieldType::String, Value::String(s)) => Ok(FieldValue::String(s.clone())),
        (FieldType::Number, Value::Number(n)) => {
            n.as_f64().map(FieldValue::Number).ok_or_else(fail)
        }
        (FieldType::Number, Value::String(s)) => match s.trim().parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(FieldValue::Number(n)),
            _ => Err(fail()),
        },
        (FieldType::Date, Value::String(s)) => {
            parse_date(s.trim()).map(FieldValue::Date).ok_or_else(fail)
        }
        (FieldType::Boolean, Value::Bool(b)) => Ok(FieldValue::Boolean(*b)),
        (FieldType::Boolean, Value::String(s)) => match s.as_str() {
            "true" => Ok(FieldValue::Boolean(true)),
            "false" => Ok(FieldValue::Boolean(false)),
            _ => Err(fail()),
        },
        _ => Err(fail()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn flat(content: Value) -> (FlatDoc, Vec<(String, FieldType)>) {
        flatten(&content, &BTreeMap::new(), &Limits::default()).expect("flattens")
    }

    fn day(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        NaiveDate::from_ymd_opt(y, m, d)
            .expect("valid day")
            .and_time(NaiveTime::MIN)
            .and_utc()
    }

    #[test]
    fn infers_types_and_dotted_names() {
        let (doc, added) = flat(json!({
            "a": {"b": [1, 2]},
            "c": "x",
            "ok": true,
            "when": "2024-03-05",
            "at": "2024-03-05T10:30:00+02:00",
        }));
        assert_eq!(
            added,
            vec![
                ("a.b".to_string(), FieldType::Number),
                ("at".to_string(), FieldType::Date),
                ("c".to_string(), FieldType::String),
                ("ok".to_string(), FieldType::Boolean),
                ("when".to_string(), FieldType::Date),
            ]
        );
        assert_eq!(
            doc.fields["a.b"],
            [FieldValue::Number(1.0), FieldValue::Number(2.0)]
        );
        assert_eq!(doc.fields["c"], [FieldValue::String("x".into())]);
        assert_eq!(doc.fields["ok"], [FieldValue::Boolean(true)]);
        assert_eq!(doc.fields["when"], [FieldValue::Date(day(2024, 3, 5))]);
        let at = DateTime::parse_from_rfc3339("2024-03-05T08:30:00Z")
            .expect("date")
            .with_timezone(&Utc);
        assert_eq!(doc.fields["at"], [FieldValue::Date(at)]);
    }

    #[test]
    fn date_detection_is_strict() {
        assert_eq!(parse_date("2024-02-29"), Some(day(2024, 2, 29)));
        assert_eq!(parse_date("2023-02-29"), None);
        assert_eq!(parse_date("2024-2-29"), None);
        assert_eq!(parse_date("20240229"), None);
        assert_eq!(parse_date("2024-02-29T00:00:00"), None, "no offset");
        assert!(parse_date("2024-02-29T12:00:00.123Z").is_some());
        assert_eq!(parse_date("sample 2024"), None);
    }

    #[test]
    fn arrays_of_objects_share_fields_and_null_adds_nothing() {
        let (doc, added) = flat(json!({
            "files": [{"name": "a", "size": 1}, {"name": "b"}, {"size": 3}],
            "gone": null,
            "empty": [],
            "nested": [[1], [2, [3]]],
        }));
        assert_eq!(
            doc.fields["files.name"],
            [
                FieldValue::String("a".into()),
                FieldValue::String("b".into())
            ]
        );
        assert_eq!(
            doc.fields["files.size"],
            [FieldValue::Number(1.0), FieldValue::Number(3.0)]
        );
        assert_eq!(doc.fields["nested"].len(), 3);
        assert!(!doc.fields.contains_key("gone"));
        assert!(!doc.fields.contains_key("empty"));
        assert_eq!(added.len(), 3);
    }

    #[test]
    fn type_conflict_names_field_and_both_types() {
        let fields = BTreeMap::from([("size".to_string(), FieldType::Number)]);
        let err =
            flatten(&json!({"size": "big"}), &fields, &Limits::default()).expect_err("conflict");
        assert!(err.contains("`size`"), "{err}");
        assert!(err.contains("number") && err.contains("string"), "{err}");

        // Within one entry the first value fixes the type too.
        let err = flatten(
            &json!({"x": [1, true]}),
            &BTreeMap::new(),
            &Limits::default(),
        )
        .expect_err("conflict");
        assert!(err.contains("`x`") && err.contains("number") && err.contains("boolean"));
    }

    #[test]
    fn date_fields_need_dates_and_string_fields_keep_strings() {
        let fields = BTreeMap::from([
            ("d".to_string(), FieldType::Date),
            ("s".to_string(), FieldType::String),
        ]);
        let (doc, added) = flatten(
            &json!({"d": "2020-01-01", "s": "2020-01-01"}),
            &fields,
            &Limits::default(),
        )
        .expect("flattens");
        assert!(added.is_empty());
        assert_eq!(doc.fields["d"], [FieldValue::Date(day(2020, 1, 1))]);
        assert_eq!(doc.fields["s"], [FieldValue::String("2020-01-01".into())]);

        let err =
            flatten(&json!({"d": "soon"}), &fields, &Limits::default()).expect_err("not a date");
        assert!(err.contains("`d`") && err.contains("date") && err.contains("string"));
    }

    #[test]
    fn depth_limit() {
        let limits = Limits {
            max_depth: 3,
            ..Limits::default()
        };
        // The content object is level 1.
        let ok = json!({"a": {"b": {"c": 1}}});
        assert!(flatten(&ok, &BTreeMap::new(), &limits).is_ok());
        let deep = json!({"a": {"b": {"c": {"d": 1}}}});
        let err = flatten(&deep, &BTreeMap::new(), &limits).expect_err("too deep");
        assert!(err.contains("deeper"), "{err}");
        // Arrays count as a level.
        let deep_array = json!({"a": {"b": [[1]]}});
        assert!(flatten(&deep_array, &BTreeMap::new(), &limits).is_err());
    }

    #[test]
    fn field_count_limit_counts_existing_and_new_fields() {
        let limits = Limits {
            max_fields: 2,
            ..Limits::default()
        };
        let fields = BTreeMap::from([("a".to_string(), FieldType::Number)]);
        assert!(flatten(&json!({"a": 1, "b": 2}), &fields, &limits).is_ok());
        let err =
            flatten(&json!({"a": 1, "b": 2, "c": 3}), &fields, &limits).expect_err("too many");
        assert!(err.contains("limit of 2"), "{err}");
        // Known fields never count twice.
        let full = BTreeMap::from([
            ("a".to_string(), FieldType::Number),
            ("b".to_string(), FieldType::Number),
            ("c".to_string(), FieldType::Number),
        ]);
        assert!(flatten(&json!({"a": 1}), &full, &limits).is_ok());
    }

    #[test]
    fn content_must_be_an_object() {
        for content in [json!([1]), json!("x"), json!(null), json!(3)] {
            let err =
                flatten(&content, &BTreeMap::new(), &Limits::default()).expect_err("not an object");
            assert!(err.contains("JSON object"), "{err}");
        }
        assert!(flatten(&json!({"": 1}), &BTreeMap::new(), &Limits::default()).is_err());
    }

    #[test]
    fn value_for_reads_request_values() {
        assert_eq!(
            value_for(FieldType::Number, &json!(2.5)),
            Ok(FieldValue::Number(2.5))
        );
        assert_eq!(
            value_for(FieldType::Number, &json!("-3")),
            Ok(FieldValue::Number(-3.0))
        );
        assert_eq!(
            value_for(FieldType::Date, &json!("2021-06-01")),
            Ok(FieldValue::Date(day(2021, 6, 1)))
        );
        assert_eq!(
            value_for(FieldType::Boolean, &json!("true")),
            Ok(FieldValue::Boolean(true))
        );
        assert_eq!(
            value_for(FieldType::String, &json!("A b")),
            Ok(FieldValue::String("A b".into()))
        );
        assert!(value_for(FieldType::String, &json!(1)).is_err());
        assert!(value_for(FieldType::Number, &json!("x")).is_err());
        assert!(value_for(FieldType::Date, &json!(5)).is_err());
        let err = value_for(FieldType::Boolean, &json!("yes")).expect_err("not a boolean");
        assert!(err.contains("boolean"), "{err}");
    }
}
