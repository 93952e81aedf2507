//! The advanced query syntax and its parser.
//!
//! ```text
//! query   := or
//! or      := and ("OR" and)*
//! and     := unary (("AND")? unary)*          adjacent terms are ANDed
//! unary   := ("NOT" | "-") unary | primary
//! primary := "(" query ")" | [field ":"] (word | "phrase" | range | wildcard)
//! range   := ("[" | "{") bound "TO" bound ("]" | "}")   "*" is an open bound
//! ```
//! Operators are upper-case; a field name is a dotted name; `\` escapes
//! the next character. Errors name the byte offset into the query.

/// A parsed query. `field: None` means every string field.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryNode {
    /// Every word of `text` (split by `text::words`) occurs; for a number,
    /// date or boolean field, the value equals `text` read as that type.
    Term {
        field: Option<String>,
        text: String,
    },
    /// The words occur consecutively in one string value.
    Phrase {
        field: Option<String>,
        text: String,
    },
    /// A word matches the pattern (`*` any run, `?` one character), lowercased.
    Wildcard {
        field: Option<String>,
        pattern: String,
    },
    /// Some value in the range; bounds as written, `None` open.
    Range {
        field: String,
        lower: Option<String>,
        lower_inclusive: bool,
        upper: Option<String>,
        upper_inclusive: bool,
    },
    And(Vec<QueryNode>),
    Or(Vec<QueryNode>),
    Not(Box<QueryNode>),
    /// Every entry (an empty query).
    All,
}

/// A syntax error: what is wrong and the byte offset where it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("query syntax error at position {position}: {message}")]
pub struct SyntaxError {
    pub position: usize,
    pub message: String,
}

/// Parses the advanced syntax.
pub fn parse(query: &str) -> Result<QueryNode, SyntaxError> {
    let _ = query;
    unimplemented!("parse")
}

/// The simple syntax: every word must occur in some string field.
pub fn simple(query: &str) -> QueryNode {
    let words: Vec<QueryNode> = crate::text::words(query)
        .map(|text| QueryNode::Term { field: None, text })
        .collect();
    match words.len() {
        0 => QueryNode::All,
        1 => words.into_iter().next().expect("one word"),
        _ => QueryNode::And(words),
    }
}
