//! An entry's full text as a `tsvector`, and the row key.
//!
//! Every word of a string value (split by [`crate::text::words`], never by
//! PostgreSQL's parser) is stored twice: as itself (`sample`: free text over
//! every string field) and qualified by its field (`meta.title=sample`:
//! `field:word`). Words never hold `=`, so the two kinds cannot collide.
//! The `tsvector` is written in its input syntax, so PostgreSQL keeps each
//! lexeme exactly as given, with positions for phrases; consecutive values
//! are one position apart more than their words, so a phrase never spans
//! two values.

use std::collections::BTreeMap;

use crate::schema::{FieldValue, FlatDoc};

/// PostgreSQL clamps positions to this; a phrase past it cannot match.
const MAX_POSITION: u32 = 16_383;
/// PostgreSQL keeps at most this many positions per lexeme.
const MAX_POSITIONS_PER_LEXEME: usize = 256;

pub(super) fn lexeme(word: &str) -> String {
    word.to_owned()
}

pub(super) fn qualified_lexeme(field: &str, word: &str) -> String {
    format!("{field}={word}")
}

/// A lexeme in `tsvector`/`tsquery` input syntax: single-quoted, with `'`
/// doubled and `\` escaped.
pub(super) fn quote_lexeme(lexeme: &str) -> String {
    let mut out = String::with_capacity(lexeme.len() + 2);
    out.push('\'');
    for c in lexeme.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// PostgreSQL's longest lexeme, in bytes; a longer one (only a field-
/// qualified lexeme of a very long field name can be) is left out.
const MAX_LEXEME_BYTES: usize = 2_047;
/// PostgreSQL's limit on a `tsvector`'s lexemes and positions, in bytes.
const MAX_TSVECTOR_BYTES: usize = (1 << 20) - 1;

/// The `tsvector` input text of a document's string fields, or why it
/// would be larger than PostgreSQL allows (an entry with hundreds of
/// kilobytes of distinct words; the tantivy engine has no such limit).
pub(super) fn tsvector(doc: &FlatDoc) -> Result<String, String> {
    let mut positions: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    let mut position = 1u32;
    for (field, values) in &doc.fields {
        for value in values {
            let FieldValue::String(text) = value else {
                continue;
            };
            for word in crate::text::words(text) {
                let at = position.min(MAX_POSITION);
                for lexeme in [qualified_lexeme(field, &word), lexeme(&word)] {
                    if lexeme.len() > MAX_LEXEME_BYTES {
                        continue;
                    }
                    let list = positions.entry(lexeme).or_default();
                    if list.len() < MAX_POSITIONS_PER_LEXEME && list.last() != Some(&at) {
                        list.push(at);
                    }
                }
                position = position.saturating_add(1);
            }
            // The gap that keeps phrases inside one value.
            position = position.saturating_add(1);
        }
    }
    // As PostgreSQL stores it: each lexeme 2-byte aligned, then a count
    // and the positions, 2 bytes each.
    let size: usize = positions
        .iter()
        .map(|(lexeme, at)| lexeme.len() + 1 + 2 + 2 * at.len())
        .sum();
    if size > MAX_TSVECTOR_BYTES {
        return Err(format!(
            "the entry's text needs about {size} bytes of full-text index, more than PostgreSQL's limit of {MAX_TSVECTOR_BYTES}"
        ));
    }
    let mut out = String::new();
    for (lexeme, at) in positions {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&quote_lexeme(&lexeme));
        out.push(':');
        let at: Vec<String> = at.iter().map(u32::to_string).collect();
        out.push_str(&at.join(","));
    }
    Ok(out)
}

/// The row key: sorts (bytewise, `COLLATE "C"`) by subject, then the
/// id-less entry, then entry ids, which is scroll order. Hex keeps byte
/// order and leaves ` ` and `!` (below every hex digit) as separators.
pub(super) fn row_key(subject: &str, entry_id: Option<&str>) -> String {
    let mut key = hex(subject.as_bytes());
    key.push(' ');
    if let Some(id) = entry_id {
        key.push('!');
        key.push_str(&hex(id.as_bytes()));
    }
    key
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_sort_by_subject_then_entry_id() {
        let mut keys = vec![
            row_key("ab", None),
            row_key("a", Some("x")),
            row_key("a", None),
            row_key("a", Some("")),
            row_key("b", None),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                row_key("a", None),
                row_key("a", Some("")),
                row_key("a", Some("x")),
                row_key("ab", None),
                row_key("b", None),
            ]
        );
    }

    #[test]
    fn tsvector_has_plain_and_qualified_words_with_a_gap_between_values() {
        let mut doc = FlatDoc::default();
        doc.fields.insert(
            "t".into(),
            vec![
                FieldValue::String("Hello it's".into()),
                FieldValue::String("world".into()),
            ],
        );
        doc.fields.insert("n".into(), vec![FieldValue::Number(1.0)]);
        assert_eq!(
            tsvector(&doc).expect("fits"),
            "'hello':1 'it':2 's':3 't=hello':1 't=it':2 't=s':3 't=world':5 'world':5"
        );
        assert_eq!(quote_lexeme("a'b\\"), "'a''b\\\\'");
    }

    #[test]
    fn too_much_text_is_refused_and_overlong_lexemes_left_out() {
        let mut doc = FlatDoc::default();
        let text: Vec<String> = (0..120_000).map(|i| format!("w{i}")).collect();
        doc.fields
            .insert("t".into(), vec![FieldValue::String(text.join(" "))]);
        assert!(tsvector(&doc).is_err());

        let mut doc = FlatDoc::default();
        doc.fields
            .insert("f".repeat(3000), vec![FieldValue::String("word".into())]);
        assert_eq!(tsvector(&doc).expect("fits"), "'word':1");
    }
}
