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
//!
//! Words come from [`WordsTokenizer`], which splits exactly as
//! `text::words` does (the PostgreSQL engine uses `text::words` itself).

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use lattice_protocol::search::{Entry, FieldType};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, STORED, STRING,
};
use tantivy::tokenizer::{Token, TokenStream, Tokenizer};
use tantivy::TantivyDocument;

use crate::plan::EntryKey;
use crate::schema::{FieldValue, FlatDoc};

/// String values longer than this are not indexed as exact values (a
/// tantivy term holds at most 64 KiB); their words are still searchable.
pub(crate) const MAX_EXACT_BYTES: usize = 8 * 1024;

/// Separates a field's name from the rest of a term.
pub(crate) const SEP: char = '\0';

/// Above every character a term can continue with: the exclusive end of
/// all terms starting with a prefix.
pub(crate) const PREFIX_END: char = '\u{10FFFF}';

/// The tantivy fields of every index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields {
    /// [`EntryKey::encode`]: upserts delete by it, scrolls order by it,
    /// and a subject's entries are the keys starting with `subject NUL`
    /// (no separate subject field: its unique terms would cost ingest time).
    pub(crate) key: Field,
    /// The entry as given (canonical `visible_to`), JSON; results read it.
    pub(crate) source: Field,
    pub(crate) visible_to: Field,
    pub(crate) exact: Field,
    pub(crate) text: Field,
    pub(crate) all_text: Field,
}

pub(crate) fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let words = |tokenizer| {
        TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(tokenizer)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        )
    };
    let fields = Fields {
        key: builder.add_text_field("key", STRING | FAST),
        source: builder.add_text_field("source", STORED),
        visible_to: builder.add_text_field("visible_to", STRING),
        exact: builder.add_text_field("exact", STRING | FAST),
        text: builder.add_text_field("text", words(FIELDED_WORDS)),
        all_text: builder.add_text_field("all_text", words(WORDS)),
    };
    (builder.build(), fields)
}

/// Fields' tantivy handles from an existing index's schema.
pub(crate) fn fields_of(schema: &Schema) -> tantivy::Result<Fields> {
    Ok(Fields {
        key: schema.get_field("key")?,
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
    let source = Source {
        subject: &entry.subject,
        id: entry.id.as_deref(),
        content: &entry.content,
        visible_to,
    };
    out.add_text(
        fields.source,
        serde_json::to_string(&source).expect("an entry serializes"),
    );
    for principal in visible_to {
        out.add_text(fields.visible_to, principal);
    }
    for (name, values) in &doc.fields {
        for value in values {
            if let FieldValue::String(s) = value {
                // Each value is its own text value: tantivy leaves a position
                // gap between values, so a phrase never spans two.
                out.add_text(fields.all_text, s);
                out.add_text(fields.text, format!("{name}{SEP}{s}"));
                if s.len() > MAX_EXACT_BYTES {
                    continue;
                }
            }
            out.add_text(fields.exact, exact_term(name, value));
        }
    }
    out
}

/// What the `source` field stores: an [`Entry`] (it reads back as one),
/// serialized without cloning the content.
#[derive(serde::Serialize)]
struct Source<'a> {
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    content: &'a serde_json::Value,
    visible_to: &'a [String],
}

/// The tokenizer of `all_text`.
pub(crate) const WORDS: &str = "lattice_words";
/// The tokenizer of `text`: its values are `name NUL value`.
pub(crate) const FIELDED_WORDS: &str = "lattice_fielded_words";

/// Splits text into the words of `text::words` (maximal runs of
/// alphanumeric characters, lowercased, none over `MAX_WORD_BYTES`), each
/// prefixed, when `fielded`, with the `name NUL` its value starts with.
/// Written out rather than built from tantivy's filters so that it is the
/// same function by construction, and it reuses one token buffer.
#[derive(Clone, Default)]
pub(crate) struct WordsTokenizer {
    fielded: bool,
    token: Token,
}

impl WordsTokenizer {
    pub(crate) fn new(fielded: bool) -> Self {
        Self {
            fielded,
            token: Token::default(),
        }
    }
}

pub(crate) struct WordStream<'a> {
    text: &'a str,
    prefix: &'a str,
    cursor: usize,
    next_position: usize,
    token: &'a mut Token,
}

impl Tokenizer for WordsTokenizer {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        let prefix_len = match self.fielded {
            true => text.find(SEP).map_or(0, |at| at + SEP.len_utf8()),
            false => 0,
        };
        self.token.text.clear();
        WordStream {
            text,
            prefix: &text[..prefix_len],
            cursor: prefix_len,
            next_position: 0,
            token: &mut self.token,
        }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        loop {
            let rest = &self.text[self.cursor..];
            let Some(start) = rest.find(char::is_alphanumeric) else {
                self.cursor = self.text.len();
                return false;
            };
            let start = self.cursor + start;
            let end = self.text[start..]
                .find(|c: char| !c.is_alphanumeric())
                .map_or(self.text.len(), |len| start + len);
            self.cursor = end;
            let word = &self.text[start..end];
            if word.len() > crate::text::MAX_WORD_BYTES {
                continue;
            }
            let token = &mut *self.token;
            token.text.clear();
            token.text.push_str(self.prefix);
            if word.is_ascii() {
                token
                    .text
                    .extend(word.bytes().map(|b| char::from(b.to_ascii_lowercase())));
            } else {
                token.text.push_str(&word.to_lowercase());
            }
            token.offset_from = start;
            token.offset_to = end;
            token.position = self.next_position;
            token.position_length = 1;
            self.next_position += 1;
            return true;
        }
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(fielded: bool, text: &str) -> Vec<(String, usize)> {
        let mut tokenizer = WordsTokenizer::new(fielded);
        let mut stream = tokenizer.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push((stream.token().text.clone(), stream.token().position));
        }
        out
    }

    #[test]
    fn tokenizer_splits_like_text_words() {
        let long = "y".repeat(crate::text::MAX_WORD_BYTES + 1);
        for text in [
            "Run-12 of /data/Sample_A.h5: ÉTÉ ok",
            "  ",
            "",
            "ΣΑΣ and ὈΔΥΣΣΕΎΣ",
            &format!("a {long} b"),
            "ＦＵＬＬ width ＴＥＸＴ",
        ] {
            let expected: Vec<(String, usize)> = crate::text::words(text)
                .enumerate()
                .map(|(i, w)| (w, i))
                .collect();
            assert_eq!(tokens(false, text), expected, "{text:?}");
            let fielded: Vec<(String, usize)> = expected
                .into_iter()
                .map(|(w, i)| (format!("a.b\0{w}"), i))
                .collect();
            assert_eq!(tokens(true, &format!("a.b\0{text}")), fielded, "{text:?}");
        }
    }

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
