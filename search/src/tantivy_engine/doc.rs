//! The tantivy schema of an index and how an entry becomes a tantivy
//! document: the terms every field value is indexed as.
//!
//! Tantivy fixes a schema when an index is created, but an index's fields
//! appear as entries arrive. So every field of the content lives in a few
//! fixed tantivy fields, with the field's name inside each term:
//! - `exact`: one term per value, `name NUL tag payload` (tag `s` string,
//!   `n` number, `d` date, `b` boolean), raw and FAST. Payloads of numbers
//!   and dates are order-preserving hex, so term order is value order and
//!   ranges, sorting and facets work on terms and term ordinals.
//! - `text`: the words of string values as `name NUL word`, with positions.
//! - `all_text`: the same words without the name (unfielded free text).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use lattice_protocol::search::{Entry, FieldType};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{PreTokenizedString, Token};
use tantivy::TantivyDocument;

use crate::plan::EntryKey;
use crate::schema::{FieldValue, FlatDoc};

/// String values longer than this are not indexed as exact values (a
/// tantivy term holds at most 64 KiB); their words are still searchable.
pub(crate) const MAX_EXACT_BYTES: usize = 8 * 1024;

/// Positions skipped between two string values, so that a phrase never
/// spans the end of one value and the start of the next.
const VALUE_GAP: usize = 2;

/// Separates a field's name from the rest of a term.
pub(crate) const SEP: char = '\0';

/// Above every character a term can continue with: the exclusive end of
/// all terms starting with a prefix.
pub(crate) const PREFIX_END: char = '\u{10FFFF}';

/// The tantivy fields of every index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    /// [`EntryKey::encode`]: upserts delete by it, scrolls order by it.
    pub(crate) key: Field,
    pub(crate) subject: Field,
    /// The entry as given (canonical `visible_to`), JSON; results read it.
    pub(crate) source: Field,
    pub(crate) visible_to: Field,
    pub(crate) exact: Field,
    pub(crate) text: Field,
    pub(crate) all_text: Field,
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    // Words arrive pre-tokenized (`text::words`, shared with the PostgreSQL
    // engine), so the tokenizer named here is never used to index.
    let words = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer("raw")
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        key: builder.add_text_field("key", STRING | FAST),
        subject: builder.add_text_field("subject", STRING),
        source: builder.add_text_field("source", STORED),
        visible_to: builder.add_text_field("visible_to", STRING),
        exact: builder.add_text_field("exact", STRING | FAST),
        text: builder.add_text_field("text", words.clone()),
        all_text: builder.add_text_field("all_text", words),
    };
    (builder.build(), fields)
}

/// Fields' tantivy handles from an existing index's schema.
pub(crate) fn fields_of(schema: &Schema) -> tantivy::Result<Fields> {
    Ok(Fields {
        key: schema.get_field("key")?,
        subject: schema.get_field("subject")?,
        source: schema.get_field("source")?,
        visible_to: schema.get_field("visible_to")?,
        exact: schema.get_field("exact")?,
        text: schema.get_field("text")?,
        all_text: schema.get_field("all_text")?,
    })
}

/// The tag of a type in `exact` terms.
pub(crate) fn tag(ty: FieldType) -> char {
    match ty {
        FieldType::String => 's',
        FieldType::Number => 'n',
        FieldType::Date => 'd',
        FieldType::Boolean => 'b',
    }
}

/// `name NUL`: every `exact` and `text` term of the field starts with it.
pub(crate) fn field_prefix(name: &str) -> String {
    let mut prefix = String::with_capacity(name.len() + 2);
    prefix.push_str(name);
    prefix.push(SEP);
    prefix
}

/// `name NUL tag`: every `exact` term of the field starts with it.
pub(crate) fn typed_prefix(name: &str, ty: FieldType) -> String {
    let mut prefix = field_prefix(name);
    prefix.push(tag(ty));
    prefix
}

/// The `exact` term of one value.
pub(crate) fn exact_term(name: &str, value: &FieldValue) -> String {
    let mut term = field_prefix(name);
    match value {
        FieldValue::String(s) => {
            term.push('s');
            term.push_str(s);
        }
        FieldValue::Number(n) => {
            term.push('n');
            let _ = write!(term, "{:016x}", sortable_f64(*n));
        }
        FieldValue::Date(d) => {
            term.push('d');
            let _ = write!(term, "{:016x}", sortable_i64(d.timestamp_micros()));
        }
        FieldValue::Boolean(b) => {
            term.push('b');
            term.push(if *b { '1' } else { '0' });
        }
    }
    term
}

/// Reads back the value of an `exact` term, given the bytes after `name NUL`.
pub(crate) fn decode_exact(tagged: &[u8]) -> Option<FieldValue> {
    let (&tag, payload) = tagged.split_first()?;
    let payload = std::str::from_utf8(payload).ok()?;
    match tag {
        b's' => Some(FieldValue::String(payload.to_string())),
        b'n' => Some(FieldValue::Number(unsortable_f64(
            u64::from_str_radix(payload, 16).ok()?,
        ))),
        b'd' => {
            let micros = u64::from_str_radix(payload, 16).ok()? ^ (1 << 63);
            DateTime::<Utc>::from_timestamp_micros(micros as i64).map(FieldValue::Date)
        }
        b'b' => Some(FieldValue::Boolean(payload == "1")),
        _ => None,
    }
}

/// Maps an f64 to a u64 with the same order (`-0` is `0`).
fn sortable_f64(n: f64) -> u64 {
    let n = if n == 0.0 { 0.0 } else { n };
    let bits = n.to_bits();
    if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    }
}

fn unsortable_f64(bits: u64) -> f64 {
    if bits >> 63 == 1 {
        f64::from_bits(bits & !(1 << 63))
    } else {
        f64::from_bits(!bits)
    }
}

fn sortable_i64(n: i64) -> u64 {
    (n as u64) ^ (1 << 63)
}

/// Builds the tantivy document of an entry whose content flattened to `doc`.
pub(crate) fn build(
    fields: &Fields,
    entry: &Entry,
    visible_to: &[String],
    doc: &FlatDoc,
) -> TantivyDocument {
    let mut out = TantivyDocument::new();
    out.add_text(
        fields.key,
        EntryKey::new(&entry.subject, entry.id.as_deref()).encode(),
    );
    out.add_text(fields.subject, &entry.subject);
    let source = Entry {
        subject: entry.subject.clone(),
        id: entry.id.clone(),
        content: entry.content.clone(),
        visible_to: visible_to.to_vec(),
    };
    out.add_text(
        fields.source,
        serde_json::to_string(&source).expect("an entry serializes"),
    );
    for principal in visible_to {
        out.add_text(fields.visible_to, principal);
    }
    let mut text_tokens = Vec::new();
    let mut all_tokens = Vec::new();
    let mut position = 0;
    for (name, values) in &doc.fields {
        let prefix = field_prefix(name);
        for value in values {
            if let FieldValue::String(s) = value {
                for word in crate::text::words(s) {
                    text_tokens.push(token(format!("{prefix}{word}"), position));
                    all_tokens.push(token(word, position));
                    position += 1;
                }
                position += VALUE_GAP;
                if s.len() > MAX_EXACT_BYTES {
                    continue;
                }
            }
            out.add_text(fields.exact, exact_term(name, value));
        }
    }
    out.add_pre_tokenized_text(fields.text, pre_tokenized(text_tokens));
    out.add_pre_tokenized_text(fields.all_text, pre_tokenized(all_tokens));
    out
}

fn token(text: String, position: usize) -> Token {
    Token {
        offset_from: 0,
        offset_to: 0,
        position,
        text,
        position_length: 1,
    }
}

fn pre_tokenized(tokens: Vec<Token>) -> PreTokenizedString {
    PreTokenizedString {
        text: String::new(),
        tokens,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_terms_sort_like_numbers() {
        let numbers = [-1e300, -2.5, -1.0, -0.0, 0.0, 1e-9, 1.0, 2.0, 10.0, 1e300];
        let terms: Vec<String> = numbers
            .iter()
            .map(|n| exact_term("x", &FieldValue::Number(*n)))
            .collect();
        for pair in terms.windows(2) {
            assert!(pair[0] <= pair[1], "{pair:?}");
        }
        for n in numbers {
            let term = exact_term("x", &FieldValue::Number(n));
            assert_eq!(
                decode_exact(&term.as_bytes()[2..]),
                Some(FieldValue::Number(if n == 0.0 { 0.0 } else { n }))
            );
        }
    }

    #[test]
    fn date_terms_sort_like_dates_and_round_trip() {
        let dates = [
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00Z",
            "2024-05-01T10:00:00.5Z",
        ]
        .map(|d| {
            DateTime::parse_from_rfc3339(d)
                .expect("date")
                .with_timezone(&Utc)
        });
        let terms: Vec<String> = dates
            .iter()
            .map(|d| exact_term("d", &FieldValue::Date(*d)))
            .collect();
        assert!(terms.windows(2).all(|pair| pair[0] < pair[1]));
        for (term, date) in terms.iter().zip(dates) {
            assert_eq!(
                decode_exact(&term.as_bytes()[2..]),
                Some(FieldValue::Date(date))
            );
        }
    }
}
