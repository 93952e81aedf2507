//! Building SQL text with bind parameters, and compiling filters, the query
//! AST, sorts and relevance into SQL expressions over one entries row
//! (aliased `e`).
//!
//! Nothing a caller wrote is ever put into the SQL text: values, field
//! names, LIKE patterns, `tsquery`s are all bind parameters. The only text
//! pasted in is ours (operators, column names, fixed casts).

use std::collections::BTreeMap;

use lattice_protocol::search::{FieldType, Filter, RangeBound, SortField, SortOrder};
use serde_json::Value;
use sqlx::postgres::{PgArguments, Postgres};

use super::words::{lexeme, qualified_lexeme, quote_lexeme};
use crate::query::QueryNode;
use crate::schema::{value_for, FieldValue};
use crate::SearchError;

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

    pub(super) fn query(&self) -> sqlx::query::Query<'_, Postgres, PgArguments> {
        let mut query = sqlx::query(&self.text);
        for arg in &self.args {
            query = match arg {
                Arg::Text(v) => query.bind(v.clone()),
                Arg::Texts(v) => query.bind(v.clone()),
                Arg::OptTexts(v) => query.bind(v.clone()),
                Arg::F64(v) => query.bind(*v),
                Arg::I64(v) => query.bind(*v),
            };
        }
        query
    }
}

/// How a field value is stored in the `fields` column: strings and
/// booleans as themselves, numbers as JSON numbers, dates as epoch
/// milliseconds (so ranges and histograms are numeric comparisons).
pub(super) fn stored_json(value: &FieldValue) -> Value {
    match value {
        FieldValue::String(s) => Value::String(s.clone()),
        FieldValue::Number(n) => number_json(*n),
        FieldValue::Date(d) => Value::from(d.timestamp_millis()),
        FieldValue::Boolean(b) => Value::Bool(*b),
    }
}

pub(super) fn number_json(n: f64) -> Value {
    serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
}

fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::String => "string",
        FieldType::Number => "number",
        FieldType::Date => "date",
        FieldType::Boolean => "boolean",
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

/// Compiles requests against one index's field map.
pub(super) struct Compiler<'a> {
    pub(super) fields: &'a BTreeMap<String, FieldType>,
}

impl Compiler<'_> {
    pub(super) fn field_type(&self, name: &str) -> Result<FieldType, SearchError> {
        self.fields
            .get(name)
            .copied()
            .ok_or_else(|| SearchError::invalid(format!("unknown field `{name}`")))
    }

    fn value(&self, name: &str, ty: FieldType, value: &Value) -> Result<Value, SearchError> {
        let read = value_for(ty, value).map_err(|why| {
            SearchError::invalid(format!(
                "field `{name}` is a {} field: {why}",
                type_name(ty)
            ))
        })?;
        Ok(stored_json(&read))
    }

    /// `{"name": [value]}`: containment in `fields` (uses the GIN index).
    fn contains(sql: &mut Sql, name: &str, values: Vec<Value>) {
        let mut doc = serde_json::Map::new();
        doc.insert(name.to_owned(), Value::Array(values));
        sql.push("e.fields @> ").bind_jsonb(&Value::Object(doc));
    }

    /// Pushes a boolean SQL expression for `filter`.
    pub(super) fn filter(&self, sql: &mut Sql, filter: &Filter) -> Result<(), SearchError> {
        match filter {
            Filter::MatchAny { field_name, values } => {
                let ty = self.field_type(field_name)?;
                if values.is_empty() {
                    sql.push("FALSE");
                    return Ok(());
                }
                sql.push("(");
                for (i, value) in values.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    let value = self.value(field_name, ty, value)?;
                    Self::contains(sql, field_name, vec![value]);
                }
                sql.push(")");
            }
            Filter::MatchAll { field_name, values } => {
                let ty = self.field_type(field_name)?;
                if values.is_empty() {
                    sql.push("TRUE");
                    return Ok(());
                }
                let values = values
                    .iter()
                    .map(|v| self.value(field_name, ty, v))
                    .collect::<Result<Vec<_>, _>>()?;
                Self::contains(sql, field_name, values);
            }
            Filter::Range { field_name, values } => {
                let ty = self.field_type(field_name)?;
                let ranges = values
                    .iter()
                    .map(|bound| self.range_bound(field_name, ty, bound))
                    .collect::<Result<Vec<_>, _>>()?;
                self.range(sql, field_name, ty, &ranges)?;
            }
            Filter::Exists { field_name } => {
                self.field_type(field_name)?;
                sql.push("(e.fields ? ").bind_text(field_name).push(")");
            }
            Filter::Like { field_name, value } => {
                let ty = self.field_type(field_name)?;
                if ty != FieldType::String {
                    return Err(SearchError::invalid(format!(
                        "`like` needs a string field; `{field_name}` is a {} field",
                        type_name(ty)
                    )));
                }
                sql.push("EXISTS (SELECT 1 FROM jsonb_array_elements_text(e.fields -> ")
                    .bind_text(field_name)
                    .push(") AS v(x) WHERE v.x LIKE ")
                    .bind_text(like_pattern(value))
                    .push(" COLLATE \"C\")");
            }
            Filter::Not { filter } => {
                sql.push("NOT (");
                self.filter(sql, filter)?;
                sql.push(")");
            }
            Filter::And { filters } => self.all(sql, filters, " AND ", "TRUE")?,
            Filter::Or { filters } => self.all(sql, filters, " OR ", "FALSE")?,
        }
        Ok(())
    }

    /// `filters` joined by `op`; `empty` when there are none.
    pub(super) fn all(
        &self,
        sql: &mut Sql,
        filters: &[Filter],
        op: &str,
        empty: &str,
    ) -> Result<(), SearchError> {
        if filters.is_empty() {
            sql.push(empty);
            return Ok(());
        }
        sql.push("(");
        for (i, filter) in filters.iter().enumerate() {
            if i > 0 {
                sql.push(op);
            }
            self.filter(sql, filter)?;
        }
        sql.push(")");
        Ok(())
    }

    fn range_bound(
        &self,
        name: &str,
        ty: FieldType,
        bound: &RangeBound,
    ) -> Result<Range, SearchError> {
        let end = |value: &Option<Value>| -> Result<Option<Value>, SearchError> {
            match value {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if s == "*" => Ok(None),
                Some(v) => self.value(name, ty, v).map(Some),
            }
        };
        Ok(Range {
            lower: end(&bound.from)?,
            lower_inclusive: true,
            upper: end(&bound.to)?,
            upper_inclusive: true,
        })
    }

    /// Some value of the field lies in one of `ranges`.
    fn range(
        &self,
        sql: &mut Sql,
        name: &str,
        ty: FieldType,
        ranges: &[Range],
    ) -> Result<(), SearchError> {
        let value = match ty {
            FieldType::Number | FieldType::Date => "v.x::float8",
            FieldType::String => "(v.x #>> '{}') COLLATE \"C\"",
            FieldType::Boolean => {
                return Err(SearchError::invalid(format!(
                    "a range needs a number, date or string field; `{name}` is a boolean field"
                )))
            }
        };
        if ranges.is_empty() {
            sql.push("FALSE");
            return Ok(());
        }
        sql.push("EXISTS (SELECT 1 FROM jsonb_array_elements(e.fields -> ")
            .bind_text(name)
            .push(") AS v(x) WHERE ");
        for (i, range) in ranges.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push("(TRUE");
            for (end, op) in [
                (
                    &range.lower,
                    if range.lower_inclusive { " >= " } else { " > " },
                ),
                (
                    &range.upper,
                    if range.upper_inclusive { " <= " } else { " < " },
                ),
            ] {
                let Some(end) = end else { continue };
                sql.push(" AND ").push(value).push(op);
                match end {
                    Value::Number(n) => {
                        sql.bind(Arg::F64(n.as_f64().unwrap_or(f64::NAN)));
                    }
                    Value::String(s) => {
                        sql.bind_text(s.clone());
                    }
                    other => {
                        return Err(SearchError::invalid(format!(
                            "bad range bound {other} for field `{name}`"
                        )))
                    }
                }
            }
            sql.push(")");
        }
        sql.push(")");
        Ok(())
    }

    /// Pushes a boolean SQL expression for a parsed query.
    pub(super) fn node(&self, sql: &mut Sql, node: &QueryNode) -> Result<(), SearchError> {
        match node {
            QueryNode::All => {
                sql.push("TRUE");
            }
            QueryNode::Term { field, text } => self.words(sql, field.as_deref(), text, " & ")?,
            QueryNode::Phrase { field, text } => {
                self.words(sql, field.as_deref(), text, " <-> ")?
            }
            QueryNode::Wildcard { field, pattern } => {
                let pattern = like_pattern(&pattern.to_lowercase());
                match field {
                    None => {
                        sql.push("EXISTS (SELECT 1 FROM unnest(e.words) AS u WHERE u.lexeme LIKE ")
                            .bind_text(pattern)
                            .push(" COLLATE \"C\" AND strpos(u.lexeme, '=') = 0)");
                    }
                    Some(name) => {
                        self.string_field(name, "a wildcard")?;
                        let prefix = qualified_lexeme(name, "");
                        // Words hold no `=`, so a lexeme of this field has no
                        // `=` after the prefix (another field's may).
                        sql.push("EXISTS (SELECT 1 FROM unnest(e.words) AS u WHERE u.lexeme LIKE ")
                            .bind_text(format!("{}{pattern}", like_pattern_literal(&prefix)))
                            .push(" COLLATE \"C\" AND strpos(substr(u.lexeme, ")
                            .bind(Arg::I64(prefix.chars().count() as i64 + 1))
                            .push("::int), '=') = 0)");
                    }
                }
            }
            QueryNode::Range {
                field,
                lower,
                lower_inclusive,
                upper,
                upper_inclusive,
            } => {
                let ty = self.field_type(field)?;
                let end = |text: &Option<String>| -> Result<Option<Value>, SearchError> {
                    text.as_deref()
                        .map(|t| self.value(field, ty, &Value::String(t.to_owned())))
                        .transpose()
                };
                let range = Range {
                    lower: end(lower)?,
                    lower_inclusive: *lower_inclusive,
                    upper: end(upper)?,
                    upper_inclusive: *upper_inclusive,
                };
                self.range(sql, field, ty, &[range])?;
            }
            QueryNode::And(nodes) => self.nodes(sql, nodes, " AND ", "TRUE")?,
            QueryNode::Or(nodes) => self.nodes(sql, nodes, " OR ", "FALSE")?,
            QueryNode::Not(node) => {
                sql.push("NOT (");
                self.node(sql, node)?;
                sql.push(")");
            }
        }
        Ok(())
    }

    fn nodes(
        &self,
        sql: &mut Sql,
        nodes: &[QueryNode],
        op: &str,
        empty: &str,
    ) -> Result<(), SearchError> {
        if nodes.is_empty() {
            sql.push(empty);
            return Ok(());
        }
        sql.push("(");
        for (i, node) in nodes.iter().enumerate() {
            if i > 0 {
                sql.push(op);
            }
            self.node(sql, node)?;
        }
        sql.push(")");
        Ok(())
    }

    fn string_field(&self, name: &str, what: &str) -> Result<(), SearchError> {
        let ty = self.field_type(name)?;
        if ty != FieldType::String {
            return Err(SearchError::invalid(format!(
                "{what} needs a string field; `{name}` is a {} field",
                type_name(ty)
            )));
        }
        Ok(())
    }

    /// A term (`op` `&`) or phrase (`op` `<->`): on a string field or every
    /// string field, the words as a `tsquery`; on another field, equality
    /// with the text read as that field's type.
    fn words(
        &self,
        sql: &mut Sql,
        field: Option<&str>,
        text: &str,
        op: &str,
    ) -> Result<(), SearchError> {
        if let Some(name) = field {
            let ty = self.field_type(name)?;
            if ty != FieldType::String {
                let value = self.value(name, ty, &Value::String(text.to_owned()))?;
                Self::contains(sql, name, vec![value]);
                return Ok(());
            }
        }
        let lexemes: Vec<String> = crate::text::words(text)
            .map(|word| match field {
                None => lexeme(&word),
                Some(name) => qualified_lexeme(name, &word),
            })
            .collect();
        if lexemes.is_empty() {
            sql.push("TRUE");
            return Ok(());
        }
        let tsquery = lexemes
            .iter()
            .map(|l| quote_lexeme(l))
            .collect::<Vec<_>>()
            .join(op);
        sql.push("e.words @@ ").bind_text(tsquery).push("::tsquery");
        Ok(())
    }

    /// The sort expression of one sort key: the smallest value (asc) or
    /// largest (desc), NULL when the entry has none (sorted last).
    pub(super) fn sort(&self, sql: &mut Sql, sort: &SortField) -> Result<(), SearchError> {
        let ty = self.field_type(&sort.field_name)?;
        let asc = sort.order == SortOrder::Asc;
        let (aggregate, elements, value) = match ty {
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
        .bind_text(sort.field_name.clone())
        .push(") AS v(x))")
        .push(if asc {
            " ASC NULLS LAST"
        } else {
            " DESC NULLS LAST"
        });
        Ok(())
    }
}

/// A range with typed bounds (`None` open).
pub(super) struct Range {
    lower: Option<Value>,
    lower_inclusive: bool,
    upper: Option<Value>,
    upper_inclusive: bool,
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

/// The words of a query that add to relevance (not under a `NOT`), as
/// lexemes for `ts_rank`, and the bare words (for per-field boosts).
pub(super) fn positive_words(node: &QueryNode, lexemes: &mut Vec<String>, bare: &mut Vec<String>) {
    match node {
        QueryNode::Term { field, text } | QueryNode::Phrase { field, text } => {
            for word in crate::text::words(text) {
                lexemes.push(match field {
                    None => lexeme(&word),
                    Some(name) => qualified_lexeme(name, &word),
                });
                bare.push(word);
            }
        }
        QueryNode::And(nodes) | QueryNode::Or(nodes) => {
            for node in nodes {
                positive_words(node, lexemes, bare);
            }
        }
        QueryNode::Wildcard { .. }
        | QueryNode::Range { .. }
        | QueryNode::Not(_)
        | QueryNode::All => {}
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
