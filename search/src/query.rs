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

/// Deepest nesting of parentheses and `NOT`s the parser follows, so that a
/// hostile query cannot exhaust the stack.
const MAX_NESTING: usize = 64;

/// Parses the advanced syntax.
///
/// An empty query, and a bare unfielded `*`, match every entry. After
/// `field:` and inside a range, `:` and `-` are part of the value (so
/// `created:2024-01-01T10:00:00Z` needs no escaping). `AND`, `OR`, `NOT`
/// and `TO` are operators only upper-case and unescaped.
pub fn parse(query: &str) -> Result<QueryNode, SyntaxError> {
    let tokens = lex(query)?;
    if tokens.is_empty() {
        return Ok(QueryNode::All);
    }
    let mut parser = Parser {
        tokens,
        next: 0,
        end: query.len(),
        depth: 0,
    };
    let node = parser.or()?;
    match parser.peek() {
        None => Ok(node),
        Some(Token {
            kind: Kind::RParen,
            pos,
        }) => Err(error(
            *pos,
            "unbalanced parenthesis: `)` has no matching `(`",
        )),
        Some(token) => Err(error(token.pos, "unexpected token")),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
    To,
}

#[derive(Clone, Debug, PartialEq)]
enum Kind {
    LParen,
    RParen,
    Phrase(String),
    /// `keyword` is set for an unescaped upper-case operator word.
    Word {
        text: String,
        wildcard: bool,
        keyword: Option<Keyword>,
    },
    /// `name:` (the colon included).
    Field(String),
    /// `[` (inclusive) or `{`.
    Open(bool),
    /// `]` (inclusive) or `}`.
    Close(bool),
    Minus,
}

#[derive(Clone, Debug, PartialEq)]
struct Token {
    kind: Kind,
    pos: usize,
}

fn error(position: usize, message: impl Into<String>) -> SyntaxError {
    SyntaxError {
        position,
        message: message.into(),
    }
}

/// Splits the query into tokens. The lexer tracks two states, because what
/// a `:` or `-` means depends on them: right after `field:`, and inside a
/// range.
fn lex(query: &str) -> Result<Vec<Token>, SyntaxError> {
    let mut tokens = Vec::new();
    let mut chars = query.char_indices().peekable();
    let mut after_field = false;
    let mut in_range = false;
    while let Some(&(pos, c)) = chars.peek() {
        if c.is_whitespace() {
            if after_field {
                return Err(error(pos, "expected a value after `:`"));
            }
            chars.next();
            continue;
        }
        let plain = !after_field && !in_range;
        let kind = match c {
            '(' => {
                chars.next();
                Kind::LParen
            }
            ')' => {
                chars.next();
                Kind::RParen
            }
            '[' | '{' => {
                chars.next();
                in_range = true;
                Kind::Open(c == '[')
            }
            ']' | '}' => {
                chars.next();
                in_range = false;
                Kind::Close(c == ']')
            }
            '"' => {
                chars.next();
                let mut text = String::new();
                loop {
                    match chars.next() {
                        None => return Err(error(pos, "unterminated phrase: `\"` is not closed")),
                        Some((_, '"')) => break,
                        Some((escape, '\\')) => match chars.next() {
                            Some((_, escaped)) => text.push(escaped),
                            None => return Err(error(escape, "nothing after `\\` to escape")),
                        },
                        Some((_, other)) => text.push(other),
                    }
                }
                Kind::Phrase(text)
            }
            '-' if plain => {
                chars.next();
                Kind::Minus
            }
            ':' if plain => return Err(error(pos, "empty field name before `:`")),
            _ => {
                let mut text = String::new();
                let mut raw = true;
                let mut wildcard = false;
                while let Some(&(at, c)) = chars.peek() {
                    let stops = c.is_whitespace()
                        || matches!(c, '(' | ')' | '"' | '[' | ']' | '{' | '}')
                        || (c == ':' && plain);
                    if stops {
                        break;
                    }
                    chars.next();
                    if c == '\\' {
                        match chars.next() {
                            Some((_, escaped)) => text.push(escaped),
                            None => return Err(error(at, "nothing after `\\` to escape")),
                        }
                        raw = false;
                        continue;
                    }
                    wildcard |= c == '*' || c == '?';
                    text.push(c);
                }
                if plain && matches!(chars.peek(), Some((_, ':'))) {
                    chars.next();
                    after_field = true;
                    if chars.peek().is_none() {
                        return Err(error(query.len(), "expected a value after `:`"));
                    }
                    tokens.push(Token {
                        kind: Kind::Field(text),
                        pos,
                    });
                    continue;
                }
                // After `field:` a value is never an operator.
                let keyword = match (raw && !after_field, text.as_str()) {
                    (true, "AND") => Some(Keyword::And),
                    (true, "OR") => Some(Keyword::Or),
                    (true, "NOT") => Some(Keyword::Not),
                    (true, "TO") => Some(Keyword::To),
                    _ => None,
                };
                Kind::Word {
                    text,
                    wildcard,
                    keyword,
                }
            }
        };
        after_field = false;
        tokens.push(Token { kind, pos });
    }
    Ok(tokens)
}

struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// The query's length: the position of errors at its end.
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.next)
    }

    fn bump(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.next).cloned();
        self.next += 1;
        token
    }

    fn peek_keyword(&self) -> Option<Keyword> {
        match self.peek() {
            Some(Token {
                kind: Kind::Word { keyword, .. },
                ..
            }) => *keyword,
            _ => None,
        }
    }

    /// Whether the next token can begin an operand.
    fn at_operand(&self) -> bool {
        match self.peek().map(|token| &token.kind) {
            Some(Kind::Word { keyword, .. }) => {
                matches!(keyword, None | Some(Keyword::Not | Keyword::To))
            }
            Some(Kind::LParen | Kind::Phrase(_) | Kind::Field(_) | Kind::Minus | Kind::Open(_)) => {
                true
            }
            _ => false,
        }
    }

    fn expect_operand(&self, operator: &str, pos: usize) -> Result<(), SyntaxError> {
        if self.at_operand() {
            Ok(())
        } else {
            Err(error(
                pos,
                format!("dangling operator: `{operator}` needs a term after it"),
            ))
        }
    }

    fn or(&mut self) -> Result<QueryNode, SyntaxError> {
        let mut nodes = vec![self.and()?];
        while self.peek_keyword() == Some(Keyword::Or) {
            let pos = self.bump().map(|token| token.pos).unwrap_or(self.end);
            self.expect_operand("OR", pos)?;
            nodes.push(self.and()?);
        }
        Ok(combine(nodes, QueryNode::Or))
    }

    fn and(&mut self) -> Result<QueryNode, SyntaxError> {
        let mut nodes = vec![self.unary()?];
        loop {
            if self.peek_keyword() == Some(Keyword::And) {
                let pos = self.bump().map(|token| token.pos).unwrap_or(self.end);
                self.expect_operand("AND", pos)?;
            } else if !self.at_operand() {
                break;
            }
            nodes.push(self.unary()?);
        }
        Ok(combine(nodes, QueryNode::And))
    }

    fn unary(&mut self) -> Result<QueryNode, SyntaxError> {
        let negation = match self.peek() {
            Some(Token {
                kind: Kind::Minus,
                pos,
            }) => Some(("-", *pos)),
            Some(Token {
                kind:
                    Kind::Word {
                        keyword: Some(Keyword::Not),
                        ..
                    },
                pos,
            }) => Some(("NOT", *pos)),
            _ => None,
        };
        let Some((operator, pos)) = negation else {
            return self.primary();
        };
        self.bump();
        self.expect_operand(operator, pos)?;
        self.enter(pos)?;
        let inner = self.unary()?;
        self.depth -= 1;
        Ok(QueryNode::Not(Box::new(inner)))
    }

    fn enter(&mut self, pos: usize) -> Result<(), SyntaxError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(error(
                pos,
                format!("query nests deeper than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<QueryNode, SyntaxError> {
        let Some(token) = self.bump() else {
            return Err(error(self.end, "expected a term"));
        };
        match token.kind {
            Kind::LParen => {
                self.enter(token.pos)?;
                if matches!(self.peek().map(|t| &t.kind), Some(Kind::RParen)) {
                    return Err(error(token.pos, "empty parentheses"));
                }
                let node = self.or()?;
                self.depth -= 1;
                match self.bump() {
                    Some(Token {
                        kind: Kind::RParen, ..
                    }) => Ok(node),
                    _ => Err(error(
                        token.pos,
                        "unbalanced parenthesis: `(` is not closed",
                    )),
                }
            }
            Kind::RParen => Err(error(
                token.pos,
                "unbalanced parenthesis: `)` has no matching `(`",
            )),
            Kind::Phrase(text) => Ok(QueryNode::Phrase { field: None, text }),
            Kind::Word {
                keyword: Some(keyword @ (Keyword::And | Keyword::Or)),
                ..
            } => {
                let name = if keyword == Keyword::And { "AND" } else { "OR" };
                Err(error(
                    token.pos,
                    format!("dangling operator: `{name}` needs a term before it"),
                ))
            }
            Kind::Word { text, wildcard, .. } => Ok(word(None, text, wildcard)),
            Kind::Field(name) => self.fielded(name, token.pos),
            Kind::Open(_) => Err(error(
                token.pos,
                "bad range: a range needs a field, as in `field:[a TO b]`",
            )),
            Kind::Close(_) => Err(error(token.pos, "bad range: `]` or `}` without a range")),
            Kind::Minus => Err(error(
                token.pos,
                "dangling operator: `-` needs a term after it",
            )),
        }
    }

    fn fielded(&mut self, field: String, field_pos: usize) -> Result<QueryNode, SyntaxError> {
        if field.is_empty() {
            return Err(error(field_pos, "empty field name before `:`"));
        }
        let Some(token) = self.bump() else {
            return Err(error(
                self.end,
                format!("expected a value after `{field}:`"),
            ));
        };
        match token.kind {
            Kind::Word { text, wildcard, .. } => Ok(word(Some(field), text, wildcard)),
            Kind::Phrase(text) => Ok(QueryNode::Phrase {
                field: Some(field),
                text,
            }),
            Kind::Open(lower_inclusive) => self.range(field, lower_inclusive, token.pos),
            _ => Err(error(
                token.pos,
                format!("expected a value after `{field}:`"),
            )),
        }
    }

    fn range(
        &mut self,
        field: String,
        lower_inclusive: bool,
        open_pos: usize,
    ) -> Result<QueryNode, SyntaxError> {
        let lower = self.bound(open_pos, "a lower bound")?;
        match self.bump() {
            Some(Token {
                kind:
                    Kind::Word {
                        keyword: Some(Keyword::To),
                        ..
                    },
                ..
            }) => {}
            Some(token) => return Err(error(token.pos, "bad range: expected `TO`")),
            None => return Err(error(open_pos, "bad range: not closed")),
        }
        let upper = self.bound(open_pos, "an upper bound")?;
        let upper_inclusive = match self.bump() {
            Some(Token {
                kind: Kind::Close(inclusive),
                ..
            }) => inclusive,
            Some(token) => return Err(error(token.pos, "bad range: expected `]` or `}`")),
            None => return Err(error(open_pos, "bad range: not closed")),
        };
        Ok(QueryNode::Range {
            field,
            lower,
            lower_inclusive,
            upper,
            upper_inclusive,
        })
    }

    /// One bound of a range: a word or phrase, `*` for open.
    fn bound(&mut self, open_pos: usize, what: &str) -> Result<Option<String>, SyntaxError> {
        match self.bump() {
            Some(Token {
                kind:
                    Kind::Word {
                        text,
                        keyword: None,
                        ..
                    },
                ..
            }) => Ok((text != "*").then_some(text)),
            Some(Token {
                kind: Kind::Phrase(text),
                ..
            }) => Ok(Some(text)),
            Some(token) => Err(error(token.pos, format!("bad range: expected {what}"))),
            None => Err(error(open_pos, "bad range: not closed")),
        }
    }
}

/// A term, or a wildcard when the word has an unescaped `*` or `?`.
fn word(field: Option<String>, text: String, wildcard: bool) -> QueryNode {
    match (wildcard, field) {
        (true, None) if text == "*" => QueryNode::All,
        (true, field) => QueryNode::Wildcard {
            field,
            pattern: text.to_lowercase(),
        },
        (false, field) => QueryNode::Term { field, text },
    }
}

fn combine(mut nodes: Vec<QueryNode>, make: fn(Vec<QueryNode>) -> QueryNode) -> QueryNode {
    if nodes.len() == 1 {
        nodes.pop().expect("one node")
    } else {
        make(nodes)
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn term(field: Option<&str>, text: &str) -> QueryNode {
        QueryNode::Term {
            field: field.map(str::to_string),
            text: text.to_string(),
        }
    }

    fn err_at(query: &str) -> (usize, String) {
        let err = parse(query).expect_err(query);
        (err.position, err.message)
    }

    #[test]
    fn empty_and_star_match_everything() {
        assert_eq!(parse(""), Ok(QueryNode::All));
        assert_eq!(parse("   "), Ok(QueryNode::All));
        assert_eq!(parse("*"), Ok(QueryNode::All));
    }

    #[test]
    fn adjacent_terms_and_explicit_operators() {
        assert_eq!(
            parse("a b AND c"),
            Ok(QueryNode::And(vec![
                term(None, "a"),
                term(None, "b"),
                term(None, "c")
            ]))
        );
        // AND binds tighter than OR.
        assert_eq!(
            parse("a OR b c"),
            Ok(QueryNode::Or(vec![
                term(None, "a"),
                QueryNode::And(vec![term(None, "b"), term(None, "c")])
            ]))
        );
        assert_eq!(
            parse("(a OR b) c"),
            Ok(QueryNode::And(vec![
                QueryNode::Or(vec![term(None, "a"), term(None, "b")]),
                term(None, "c")
            ]))
        );
        // Lower-case operators are words.
        assert_eq!(
            parse("a or b"),
            Ok(QueryNode::And(vec![
                term(None, "a"),
                term(None, "or"),
                term(None, "b")
            ]))
        );
    }

    #[test]
    fn negation() {
        assert_eq!(
            parse("a NOT b -c"),
            Ok(QueryNode::And(vec![
                term(None, "a"),
                QueryNode::Not(Box::new(term(None, "b"))),
                QueryNode::Not(Box::new(term(None, "c"))),
            ]))
        );
        assert_eq!(
            parse("NOT (a OR b)"),
            Ok(QueryNode::Not(Box::new(QueryNode::Or(vec![
                term(None, "a"),
                term(None, "b")
            ]))))
        );
        // A hyphen inside a word is part of it.
        assert_eq!(parse("x-ray"), Ok(term(None, "x-ray")));
    }

    #[test]
    fn fields_phrases_and_wildcards() {
        assert_eq!(
            parse("meta.instrument:XRD"),
            Ok(term(Some("meta.instrument"), "XRD"))
        );
        assert_eq!(
            parse(r#"title:"Crystal Growth""#),
            Ok(QueryNode::Phrase {
                field: Some("title".into()),
                text: "Crystal Growth".into()
            })
        );
        assert_eq!(
            parse(r#""a \"b\"""#),
            Ok(QueryNode::Phrase {
                field: None,
                text: "a \"b\"".into()
            })
        );
        assert_eq!(
            parse("name:Sam?le*"),
            Ok(QueryNode::Wildcard {
                field: Some("name".into()),
                pattern: "sam?le*".into()
            })
        );
        assert_eq!(
            parse("cryst*"),
            Ok(QueryNode::Wildcard {
                field: None,
                pattern: "cryst*".into()
            })
        );
        // Values after `field:` may hold `:` and `-`, and are never operators.
        assert_eq!(
            parse("at:2024-01-01T10:00:00Z"),
            Ok(term(Some("at"), "2024-01-01T10:00:00Z"))
        );
        assert_eq!(parse("n:-5"), Ok(term(Some("n"), "-5")));
        assert_eq!(parse("op:AND"), Ok(term(Some("op"), "AND")));
        // Escapes.
        assert_eq!(parse(r"a\:b"), Ok(term(None, "a:b")));
        assert_eq!(parse(r"\AND"), Ok(term(None, "AND")));
        assert_eq!(parse(r"f\*"), Ok(term(None, "f*")));
    }

    #[test]
    fn ranges() {
        assert_eq!(
            parse("size:[1 TO 10}"),
            Ok(QueryNode::Range {
                field: "size".into(),
                lower: Some("1".into()),
                lower_inclusive: true,
                upper: Some("10".into()),
                upper_inclusive: false,
            })
        );
        assert_eq!(
            parse("at:{2024-01-01T00:00:00Z TO *]"),
            Ok(QueryNode::Range {
                field: "at".into(),
                lower: Some("2024-01-01T00:00:00Z".into()),
                lower_inclusive: false,
                upper: None,
                upper_inclusive: true,
            })
        );
        assert_eq!(
            parse("n:[* TO -1]"),
            Ok(QueryNode::Range {
                field: "n".into(),
                lower: None,
                lower_inclusive: true,
                upper: Some("-1".into()),
                upper_inclusive: true,
            })
        );
    }

    #[test]
    fn unbalanced_parentheses() {
        assert_eq!(err_at("(a OR b").0, 0);
        assert_eq!(err_at("a (b (c)").0, 2);
        let (pos, message) = err_at("a b)");
        assert_eq!(pos, 3);
        assert!(message.contains("unbalanced"), "{message}");
        assert_eq!(err_at("()").0, 0);
    }

    #[test]
    fn dangling_operators() {
        let (pos, message) = err_at("a AND");
        assert_eq!(pos, 2);
        assert!(message.contains("dangling"), "{message}");
        assert_eq!(err_at("OR a").0, 0);
        assert_eq!(err_at("a OR OR b").0, 2);
        assert_eq!(err_at("a NOT").0, 2);
        assert_eq!(err_at("a -").0, 2);
        assert_eq!(err_at("(a AND) b").0, 3);
    }

    #[test]
    fn unterminated_phrase() {
        let (pos, message) = err_at(r#"a "b c"#);
        assert_eq!(pos, 2);
        assert!(message.contains("unterminated"), "{message}");
        assert_eq!(err_at(r#"a "b\""#).0, 2);
    }

    #[test]
    fn bad_ranges() {
        let (pos, message) = err_at("n:[1 10]");
        assert_eq!(pos, 5);
        assert!(message.contains("bad range"), "{message}");
        assert_eq!(err_at("n:[1 TO 10").0, 2);
        assert_eq!(err_at("n:[1 TO ]").0, 8);
        assert_eq!(err_at("[1 TO 2]").0, 0);
        assert_eq!(err_at("n:[TO 2]").0, 3);
        assert_eq!(err_at("a ]").0, 2);
    }

    #[test]
    fn empty_field_and_missing_value() {
        let (pos, message) = err_at("a :b");
        assert_eq!(pos, 2);
        assert!(message.contains("empty field"), "{message}");
        assert_eq!(err_at("title: x").0, 6);
        assert_eq!(err_at("title:").0, 6);
        assert_eq!(err_at("(title:)").0, 7);
    }

    #[test]
    fn positions_are_bytes() {
        // `é` is two bytes: the `(` is at byte 3.
        assert_eq!(err_at("é (a").0, 3);
    }

    #[test]
    fn nesting_is_bounded() {
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        assert!(err_at(&deep).1.contains("nests"));
        let nots = "NOT ".repeat(200) + "a";
        assert!(parse(&nots).is_err());
    }

    #[test]
    fn simple_syntax_ands_words() {
        assert_eq!(simple(""), QueryNode::All);
        assert_eq!(
            simple("Foo-bar"),
            QueryNode::And(vec![term(None, "foo"), term(None, "bar")])
        );
    }
}
