//! Building SQL text with bind parameters, and compiling a plan's
//! conditions and sort keys (see [`crate::plan`]) into SQL expressions over
//! one entries row (aliased `e`).
//!
//! Nothing a caller wrote is ever put into the SQL text: values, field
//! names, LIKE patterns, `tsquery`s are all bind parameters. The only text
//! pasted in is ours (operators, column names, fixed casts).

use lattice_protocol::search::FieldType;
use serde_json::Value;
use sqlx::postgres::{PgArguments, Postgres};

use super::words::{lexeme, qualified_lexeme, quote_lexeme};
use crate::plan::{number_value, Cond, SortKey};
use crate::schema::FieldValue;

/// One bind parameter.
#[derive(Clone, Debug)]
pub(super) enum Arg {
    Text(String),
    Texts(Vec<String>),
    OptTexts(Vec<Option<String>>),
    F64(f64),
    I64(i64),
}

/// SQL text plus its bind parameters, numbered as they are pushed.
#[derive(Clone, Debug, Default)]
pub(super) struct Sql {
    pub(super) text: String,
    args: Vec<Arg>,
}

impl Sql {
    pub(super) fn new(text: &str) -> Self {
        Self {
            text: text.to_owned(),
            args: Vec::new(),
        }
    }

    pub(super) fn push(&mut self, text: &str) -> &mut Self {
        self.text.push_str(text);
        self
    }

    /// Appends `$n` for a new parameter.
    pub(super) fn bind(&mut self, arg: Arg) -> &mut Self {
        self.args.push(arg);
        self.text.push_str(&format!("${}", self.args.len()));
        self
    }

    pub(super) fn bind_text(&mut self, text: impl Into<String>) -> &mut Self {
        self.bind(Arg::Text(text.into()))
    }

    /// A JSON document as `jsonb` (sent as text: the workspace's sqlx has
    /// no `json` feature and turning it on would rebuild everyone's sqlx).
    pub(super) fn bind_jsonb(&mut self, value: &Value) -> &mut Self {
        self.bind(Arg::Text(value.to_string())).push("::jsonb")
    }

    /// The statement with its parameters bound. Not kept prepared: a
    /// search's selectivity depends on its values (a rare word, a public
    /// entry), so PostgreSQL should plan each one with them rather than
    /// settle on a generic plan, and the texts vary too much to cache well.
    pub(super) fn query(&self) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        let mut query = sqlx::query(&self.text).persistent(false);
        for arg in &self.args {
            query = match arg {
                Arg::Text(v) => query.bind(v.as_str()),
                Arg::Texts(v) => query.bind(v),
                Arg::OptTexts(v) => query.bind(v),
                Arg::F64(v) => query.bind(*v),
                Arg::I64(v) => query.bind(*v),
            };
        }
        query
    }
}

/// How a field value is stored in the `fields` column: strings and
/// booleans as themselves, numbers as JSON numbers, dates as epoch
/// microseconds (tantivy's precision; exact in a `float8` for any date
/// within ±285 years of 1970), so ranges and histograms compare numbers.
pub(super) fn stored_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::String(s) => Value::String(s.clone()),
        FieldValue::Number(n) => number_value(*n),
        FieldValue::Date(d) => Value::from(d.timestamp_micros()),
        FieldValue::Boolean(b) => Value::Bool(*b),
    }
}

/// `*` any run, `?` one character, everything else literal: as a LIKE
/// pattern with `\` as the escape character.
pub(super) fn like_pattern(wildcard: &str) -> String {
    let mut out = String::with_capacity(wildcard.len());
    for c in wildcard.chars() {
        match c {
            '*' => out.push('%'),
            '?' => out.push('_'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// `text` matching only itself in a LIKE pattern.
fn like_pattern_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A number or date bound as the `float8` it is compared as.
fn numeric(value: &FieldValue) -> f64 {
    match value {
        FieldValue::Number(n) => *n,
        FieldValue::Date(d) => d.timestamp_micros() as f64,
        // The plan only lets number and date fields into ranges.
        FieldValue::String(_) | FieldValue::Boolean(_) => f64::NAN,
    }
}

/// `{"field": [values]}`: containment in `fields` (uses the GIN index).
fn contains(sql: &mut Sql, field: &str, values: Vec<Value>) {
    let mut doc = serde_json::Map::new();
    doc.insert(field.to_owned(), Value::Array(values));
    sql.push("e.fields @> ").bind_jsonb(&Value::Object(doc));
}

/// Most values of a `match_any` checked as one containment each.
const MAX_CONTAINMENTS: usize = 32;

/// The field and stored values when every part is an equality on one field.
fn equals_of_one_field(parts: &[Cond]) -> Option<(&str, Vec<Value>)> {
    let mut field = None;
    let mut values = Vec::with_capacity(parts.len());
    for part in parts {
        let Cond::Equals { field: name, value } = part else {
            return None;
        };
        if *field.get_or_insert(name.as_str()) != name.as_str() {
            return None;
        }
        values.push(stored_json(value));
    }
    Some((field?, values))
}

/// Pushes a boolean SQL expression over the row `e` for a planned condition.
pub(super) fn cond(sql: &mut Sql, cond: &Cond) {
    match cond {
        Cond::All => {
            sql.push("TRUE");
        }
        Cond::Words { field, words } => text_search(sql, field.as_deref(), words, " & "),
        Cond::Phrase { field, words } => text_search(sql, field.as_deref(), words, " <-> "),
        Cond::Wildcard { field, pattern } => {
            let pattern = like_pattern(&pattern.to_lowercase());
            match field {
                None => {
                    sql.push("EXISTS (SELECT 1 FROM unnest(e.words) AS u WHERE u.lexeme LIKE ")
                        .bind_text(pattern)
                        .push(" COLLATE \"C\" AND strpos(u.lexeme, '=') = 0)");
                }
                Some(name) => {
                    let prefix = qualified_lexeme(name, "");
                    // Words hold no `=`, so this field's lexemes have none
                    // after the prefix (another field's may).
                    sql.push("EXISTS (SELECT 1 FROM unnest(e.words) AS u WHERE u.lexeme LIKE ")
                        .bind_text(format!("{}{pattern}", like_pattern_literal(&prefix)))
                        .push(" COLLATE \"C\" AND strpos(substr(u.lexeme, ")
                        .bind(Arg::I64(prefix.chars().count() as i64 + 1))
                        .push("::int), '=') = 0)");
                }
            }
        }
        Cond::Equals { field, value } => contains(sql, field, vec![stored_json(value)]),
        Cond::Range {
            field,
            lower,
            upper,
        } => {
            sql.push("EXISTS (SELECT 1 FROM jsonb_array_elements(e.fields -> ")
                .bind_text(field.clone())
                .push(") AS v(x) WHERE TRUE");
            for (bound, inclusive, exclusive) in [(lower, " >= ", " > "), (upper, " <= ", " < ")] {
                let Some(bound) = bound else { continue };
                sql.push(" AND v.x::float8")
                    .push(if bound.inclusive {
                        inclusive
                    } else {
                        exclusive
                    })
                    .bind(Arg::F64(numeric(&bound.value)));
            }
            sql.push(")");
        }
        Cond::Exists { field } => {
            sql.push("(e.fields ? ").bind_text(field.clone()).push(")");
        }
        Cond::Like { field, pattern } => {
            sql.push("EXISTS (SELECT 1 FROM jsonb_array_elements_text(e.fields -> ")
                .bind_text(field.clone())
                .push(") AS v(x) WHERE v.x LIKE ")
                .bind_text(like_pattern(pattern))
                .push(" COLLATE \"C\")");
        }
        Cond::And(parts) => match equals_of_one_field(parts) {
            // `match_all`: one containment of every value.
            Some((field, values)) if values.len() > 1 => contains(sql, field, values),
            _ => join(sql, parts, " AND ", "TRUE"),
        },
        Cond::Or(parts) => match equals_of_one_field(parts) {
            // A long `match_any`: one array parameter instead of one per
            // value (PostgreSQL takes at most 65,535), at the cost of the
            // GIN index, which serves the short form.
            Some((field, values)) if values.len() > MAX_CONTAINMENTS => {
                sql.push("EXISTS (SELECT 1 FROM jsonb_array_elements(e.fields -> ")
                    .bind_text(field)
                    .push(") AS v(x) WHERE v.x = ANY(")
                    .bind(Arg::Texts(values.iter().map(Value::to_string).collect()))
                    .push("::jsonb[]))");
            }
            _ => join(sql, parts, " OR ", "FALSE"),
        },
        Cond::Not(inner) => {
            sql.push("NOT (");
            self::cond(sql, inner);
            sql.push(")");
        }
    }
}

fn join(sql: &mut Sql, parts: &[Cond], op: &str, empty: &str) {
    if parts.is_empty() {
        sql.push(empty);
        return;
    }
    sql.push("(");
    for (i, part) in parts.iter().enumerate() {
        if i > 0 {
            sql.push(op);
        }
        cond(sql, part);
    }
    sql.push(")");
}

/// Words of one string field (or of any) as a `tsquery` joined by `op`
/// (`&` every word, `<->` a phrase).
fn text_search(sql: &mut Sql, field: Option<&str>, words: &[String], op: &str) {
    if words.is_empty() {
        sql.push("TRUE");
        return;
    }
    let tsquery = words
        .iter()
        .map(|word| match field {
            None => quote_lexeme(&lexeme(word)),
            Some(name) => quote_lexeme(&qualified_lexeme(name, word)),
        })
        .collect::<Vec<_>>()
        .join(op);
    sql.push("e.words @@ ").bind_text(tsquery).push("::tsquery");
}

/// The sort expression of one key: the smallest value (asc) or largest
/// (desc), NULL (sorted last) when the entry has none.
pub(super) fn sort(sql: &mut Sql, key: &SortKey) {
    let asc = !key.descending;
    let (aggregate, elements, value) = match key.field_type {
        FieldType::Number | FieldType::Date => (
            if asc { "min" } else { "max" },
            "jsonb_array_elements",
            "v.x::float8",
        ),
        FieldType::String => (
            if asc { "min" } else { "max" },
            "jsonb_array_elements_text",
            "v.x COLLATE \"C\"",
        ),
        FieldType::Boolean => (
            if asc { "bool_and" } else { "bool_or" },
            "jsonb_array_elements",
            "v.x::boolean",
        ),
    };
    sql.push(&format!(
        "(SELECT {aggregate}({value}) FROM {elements}(e.fields -> "
    ))
    .bind_text(key.field.clone())
    .push(") AS v(x))")
    .push(if asc {
        " ASC NULLS LAST"
    } else {
        " DESC NULLS LAST"
    });
}

/// The words that add to relevance (not under a `NOT`): as lexemes for
/// `ts_rank`, and bare (for per-field boosts).
pub(super) fn positive_words(cond: &Cond, lexemes: &mut Vec<String>, bare: &mut Vec<String>) {
    match cond {
        Cond::Words { field, words } | Cond::Phrase { field, words } => {
            for word in words {
                lexemes.push(match field {
                    None => lexeme(word),
                    Some(name) => qualified_lexeme(name, word),
                });
                bare.push(word.clone());
            }
        }
        Cond::And(parts) | Cond::Or(parts) => {
            for part in parts {
                positive_words(part, lexemes, bare);
            }
        }
        Cond::All
        | Cond::Wildcard { .. }
        | Cond::Equals { .. }
        | Cond::Range { .. }
        | Cond::Exists { .. }
        | Cond::Like { .. }
        | Cond::Not(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_patterns_escape_sql_wildcards() {
        assert_eq!(like_pattern("a*b?c%d_e\\"), "a%b_c\\%d\\_e\\\\");
        assert_eq!(like_pattern_literal("a%b"), "a\\%b");
    }

    #[test]
    fn placeholders_are_numbered_in_order() {
        let mut sql = Sql::new("SELECT ");
        sql.bind_text("a").push(", ").bind(Arg::F64(1.0));
        assert_eq!(sql.text, "SELECT $1, $2");
    }
}
