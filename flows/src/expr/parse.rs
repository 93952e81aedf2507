//! Lexer and parser of the expression language: text to [`Expr`], with the
//! byte position of every syntax error. Recursive descent by precedence
//! level (lowest first: conditional, `or`, `and`, `not`, comparisons,
//! `+ -`, `* / // %`, unary minus, `**`, postfix `.name` `[i]` `(args)`),
//! with a nesting limit so hostile input cannot exhaust the stack.

use super::ExprError;
use serde_json::Value;

/// Deepest nesting of brackets and sub-expressions the parser accepts.
pub(crate) const MAX_NESTING: usize = 64;
/// Longest expression text accepted, in bytes.
pub(crate) const MAX_SOURCE_BYTES: usize = 16 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Num(Value),
    Str(String),
    /// A backtick-quoted JSONPath into the names: `` `$.a.b` ``.
    Path(String),
    Ident(String),
    Op(&'static str),
    End,
}

const OPS: [&str; 24] = [
    "**", "//", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "<", ">", "(", ")", "[", "]", "{",
    "}", ",", ":", ".", "=", "!",
];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ExprError> {
    let bytes = src.as_bytes();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                i += 1;
            }
            let mut float = false;
            if i < bytes.len() && bytes[i] == b'.' {
                float = true;
                i += 1;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            if i < bytes.len() && (bytes[i] == b'e' || bytes[i] == b'E') {
                float = true;
                i += 1;
                if i < bytes.len() && (bytes[i] == b'+' || bytes[i] == b'-') {
                    i += 1;
                }
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = src[start..i].chars().filter(|c| *c != '_').collect();
            let num = if float {
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            } else {
                text.parse::<i64>().ok().map(Value::from)
            };
            let num = num.ok_or_else(|| ExprError::syntax(start, "number out of range"))?;
            toks.push((Tok::Num(num), start));
            continue;
        }
        if c == b'\'' || c == b'"' {
            let (s, end) = lex_string(src, i)?;
            toks.push((Tok::Str(s), start));
            i = end;
            continue;
        }
        if c == b'`' {
            let Some(len) = src[i + 1..].find('`') else {
                return Err(ExprError::syntax(i, "unterminated `path`"));
            };
            let path = &src[i + 1..i + 1 + len];
            let jp = serde_json_path::JsonPath::parse(path)
                .map_err(|e| ExprError::syntax(i, format!("bad JSONPath `{path}`: {e}")))?;
            drop(jp);
            toks.push((Tok::Path(path.to_string()), start));
            i += len + 2;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            toks.push((Tok::Ident(src[start..i].to_string()), start));
            continue;
        }
        let Some(op) = OPS.iter().find(|op| src[i..].starts_with(**op)) else {
            let ch = src[i..].chars().next().unwrap_or('?');
            return Err(ExprError::syntax(i, format!("unexpected character {ch:?}")));
        };
        if *op == "=" || *op == "!" {
            return Err(ExprError::syntax(
                i,
                format!("unexpected {op:?} (comparison is ==, !=)"),
            ));
        }
        toks.push((Tok::Op(op), start));
        i += op.len();
    }
    toks.push((Tok::End, src.len()));
    Ok(toks)
}

fn lex_string(src: &str, start: usize) -> Result<(String, usize), ExprError> {
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((off, ch)) = chars.next() {
        match ch {
            c if c == quote => return Ok((out, start + 1 + off + 1)),
            '\\' => {
                let Some((_, esc)) = chars.next() else { break };
                out.push(match esc {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    other => other,
                });
            }
            c => out.push(c),
        }
    }
    Err(ExprError::syntax(start, "unterminated string"))
}

/// One node of a parsed expression.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Expr {
    Const(Value),
    Name(String),
    /// A JSONPath into the names (already checked to parse).
    Path(String),
    List(Vec<Expr>),
    Dict(Vec<(Expr, Expr)>),
    /// `[elem for var in iter if cond]`
    Comprehension {
        elem: Box<Expr>,
        var: String,
        iter: Box<Expr>,
        cond: Option<Box<Expr>>,
    },
    Attr(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Slice(Box<Expr>, Option<Box<Expr>>, Option<Box<Expr>>),
    Call(Box<Expr>, Vec<Expr>),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    /// `a < b <= c`: operands and the operators between them.
    Compare(Vec<Expr>, Vec<&'static str>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    IfElse {
        then: Box<Expr>,
        cond: Box<Expr>,
        otherwise: Box<Expr>,
    },
}

pub(crate) fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_SOURCE_BYTES {
        return Err(ExprError::syntax(
            0,
            format!("expression longer than {MAX_SOURCE_BYTES} bytes"),
        ));
    }
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.expr()?;
    match p.peek() {
        Tok::End => Ok(e),
        t => Err(ExprError::syntax(
            p.offset(),
            format!("unexpected {} after the expression", describe(t)),
        )),
    }
}

fn describe(t: &Tok) -> String {
    match t {
        Tok::Num(n) => format!("number {n}"),
        Tok::Str(s) => format!("string {s:?}"),
        Tok::Path(p) => format!("path `{p}`"),
        Tok::Ident(s) => format!("{s:?}"),
        Tok::Op(o) => format!("{o:?}"),
        Tok::End => "end of expression".to_string(),
    }
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos].0
    }
    fn offset(&self) -> usize {
        self.toks[self.pos].1
    }
    fn bump(&mut self) -> Tok {
        let t = self.toks[self.pos].0.clone();
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
        t
    }
    fn is_op(&self, op: &str) -> bool {
        matches!(self.peek(), Tok::Op(o) if *o == op)
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == kw)
    }
    fn eat_op(&mut self, op: &str) -> bool {
        let yes = self.is_op(op);
        if yes {
            self.bump();
        }
        yes
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        let yes = self.is_kw(kw);
        if yes {
            self.bump();
        }
        yes
    }
    fn expect_op(&mut self, op: &str) -> Result<(), ExprError> {
        if self.eat_op(op) {
            return Ok(());
        }
        Err(ExprError::syntax(
            self.offset(),
            format!("expected {op:?}, found {}", describe(self.peek())),
        ))
    }
    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(ExprError::syntax(
                self.offset(),
                format!("expression nested deeper than {MAX_NESTING} levels"),
            ));
        }
        Ok(())
    }

    fn expr(&mut self) -> Result<Expr, ExprError> {
        self.enter()?;
        let then = self.or()?;
        let e = if self.eat_kw("if") {
            let cond = self.or()?;
            if !self.eat_kw("else") {
                return Err(ExprError::syntax(
                    self.offset(),
                    format!("expected \"else\", found {}", describe(self.peek())),
                ));
            }
            let otherwise = self.expr()?;
            Expr::IfElse {
                then: Box::new(then),
                cond: Box::new(cond),
                otherwise: Box::new(otherwise),
            }
        } else {
            then
        };
        self.depth -= 1;
        Ok(e)
    }

    fn or(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.and()?;
        while self.eat_kw("or") {
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }

    fn and(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.not()?;
        while self.eat_kw("and") {
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }

    fn not(&mut self) -> Result<Expr, ExprError> {
        if self.eat_kw("not") {
            self.enter()?;
            let e = Expr::Not(Box::new(self.not()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.comparison()
    }

    fn comp_op(&mut self) -> Option<&'static str> {
        for op in ["==", "!=", "<=", ">=", "<", ">"] {
            if self.eat_op(op) {
                return Some(op);
            }
        }
        if self.eat_kw("in") {
            return Some("in");
        }
        if self.is_kw("not") && matches!(&self.toks[self.pos + 1].0, Tok::Ident(s) if s == "in") {
            self.bump();
            self.bump();
            return Some("not in");
        }
        if self.eat_kw("is") {
            return Some(if self.eat_kw("not") { "is not" } else { "is" });
        }
        None
    }

    fn comparison(&mut self) -> Result<Expr, ExprError> {
        let first = self.additive()?;
        let mut operands = vec![first];
        let mut ops = Vec::new();
        while let Some(op) = self.comp_op() {
            ops.push(op);
            operands.push(self.additive()?);
        }
        if ops.is_empty() {
            return Ok(operands.pop().expect("one operand"));
        }
        Ok(Expr::Compare(operands, ops))
    }

    fn additive(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.multiplicative()?;
        loop {
            let op = if self.eat_op("+") {
                "+"
            } else if self.eat_op("-") {
                "-"
            } else {
                return Ok(e);
            };
            e = Expr::Binary(op, Box::new(e), Box::new(self.multiplicative()?));
        }
    }

    fn multiplicative(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.unary()?;
        loop {
            let op = ["*", "//", "/", "%"].into_iter().find(|op| self.is_op(op));
            let Some(op) = op else { return Ok(e) };
            self.bump();
            e = Expr::Binary(op, Box::new(e), Box::new(self.unary()?));
        }
    }

    fn unary(&mut self) -> Result<Expr, ExprError> {
        if self.is_op("-") || self.is_op("+") {
            let op = if self.eat_op("-") {
                "-"
            } else {
                self.bump();
                "+"
            };
            self.enter()?;
            let e = Expr::Unary(op, Box::new(self.unary()?));
            self.depth -= 1;
            return Ok(e);
        }
        self.power()
    }

    fn power(&mut self) -> Result<Expr, ExprError> {
        let base = self.postfix()?;
        if self.eat_op("**") {
            self.enter()?;
            let exp = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Binary("**", Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Expr, ExprError> {
        let mut e = self.primary()?;
        let mut chain = 0usize;
        loop {
            chain += 1;
            if chain > 4 * MAX_NESTING {
                return Err(ExprError::syntax(self.offset(), "postfix chain too long"));
            }
            if self.eat_op(".") {
                match self.bump() {
                    Tok::Ident(name) => e = Expr::Attr(Box::new(e), name),
                    t => {
                        return Err(ExprError::syntax(
                            self.toks[self.pos.saturating_sub(1)].1,
                            format!("expected a name after \".\", found {}", describe(&t)),
                        ))
                    }
                }
            } else if self.eat_op("[") {
                self.enter()?;
                let lo = if self.is_op(":") {
                    None
                } else {
                    Some(self.expr()?)
                };
                if self.eat_op(":") {
                    let hi = if self.is_op("]") {
                        None
                    } else {
                        Some(Box::new(self.expr()?))
                    };
                    self.expect_op("]")?;
                    e = Expr::Slice(Box::new(e), lo.map(Box::new), hi);
                } else {
                    self.expect_op("]")?;
                    let idx = lo.expect("an index when there is no colon");
                    e = Expr::Index(Box::new(e), Box::new(idx));
                }
                self.depth -= 1;
            } else if self.eat_op("(") {
                self.enter()?;
                let mut args = Vec::new();
                while !self.is_op(")") {
                    args.push(self.expr()?);
                    if !self.eat_op(",") {
                        break;
                    }
                }
                self.expect_op(")")?;
                self.depth -= 1;
                e = Expr::Call(Box::new(e), args);
            } else {
                return Ok(e);
            }
        }
    }

    fn primary(&mut self) -> Result<Expr, ExprError> {
        let at = self.offset();
        match self.bump() {
            Tok::Num(n) => Ok(Expr::Const(n)),
            Tok::Path(p) => Ok(Expr::Path(p)),
            Tok::Str(mut s) => {
                // adjacent string literals concatenate, as in Python
                while let Tok::Str(more) = self.peek().clone() {
                    self.bump();
                    s.push_str(&more);
                }
                Ok(Expr::Const(Value::String(s)))
            }
            Tok::Ident(name) => Ok(match name.as_str() {
                "True" | "true" => Expr::Const(Value::Bool(true)),
                "False" | "false" => Expr::Const(Value::Bool(false)),
                "None" | "null" => Expr::Const(Value::Null),
                "and" | "or" | "not" | "if" | "else" | "in" | "for" | "is" | "lambda"
                | "import" => {
                    return Err(ExprError::syntax(
                        at,
                        format!("unexpected keyword {name:?}"),
                    ))
                }
                _ => Expr::Name(name),
            }),
            Tok::Op("(") => {
                self.enter()?;
                let e = self.expr()?;
                self.expect_op(")")?;
                self.depth -= 1;
                Ok(e)
            }
            Tok::Op("[") => {
                self.enter()?;
                let mut items = Vec::new();
                if !self.is_op("]") {
                    let first = self.expr()?;
                    if self.eat_kw("for") {
                        let e = self.comprehension_tail(first)?;
                        self.depth -= 1;
                        return Ok(e);
                    }
                    items.push(first);
                    while self.eat_op(",") {
                        if self.is_op("]") {
                            break;
                        }
                        items.push(self.expr()?);
                    }
                }
                self.expect_op("]")?;
                self.depth -= 1;
                Ok(Expr::List(items))
            }
            Tok::Op("{") => {
                self.enter()?;
                let mut pairs = Vec::new();
                while !self.is_op("}") {
                    let k = self.expr()?;
                    self.expect_op(":")?;
                    let v = self.expr()?;
                    pairs.push((k, v));
                    if !self.eat_op(",") {
                        break;
                    }
                }
                self.expect_op("}")?;
                self.depth -= 1;
                Ok(Expr::Dict(pairs))
            }
            t => Err(ExprError::syntax(
                at,
                format!("expected a value, found {}", describe(&t)),
            )),
        }
    }

    fn comprehension_tail(&mut self, elem: Expr) -> Result<Expr, ExprError> {
        let var = match self.bump() {
            Tok::Ident(v) => v,
            t => {
                return Err(ExprError::syntax(
                    self.offset(),
                    format!("expected a loop variable, found {}", describe(&t)),
                ))
            }
        };
        if !self.eat_kw("in") {
            return Err(ExprError::syntax(self.offset(), "expected \"in\""));
        }
        let iter = self.or()?;
        let cond = if self.eat_kw("if") {
            Some(Box::new(self.or()?))
        } else {
            None
        };
        self.expect_op("]")?;
        Ok(Expr::Comprehension {
            elem: Box::new(elem),
            var,
            iter: Box::new(iter),
            cond,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_globus_flows_use() {
        for src in [
            "'prefix ' + job.paths.suffix",
            "stat.details.type == 'dir'",
            "'kind' in info.details and info.details.kind == 'file'",
            "'error' not in r.details or r.details.error != 'Missing'",
            "dst.dir + src.file.rpartition('/')[2]",
            "[{'p': base.rstrip('/') + '/' + e.name} for e in listing.details.DATA]",
            "xs[1:]",
            "a if c else b",
            "{'id': a.id, 'path': a.path}",
            "-2 ** 2 + 7 // 2 % 3",
            "step.details.results[0].output",
            "'prefix ' + `$.job.paths.suffix`",
        ] {
            parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
        }
    }

    #[test]
    fn syntax_errors_carry_positions() {
        let e = parse("a + ").unwrap_err();
        assert!(e.to_string().contains("position 4"), "{e}");
        let e = parse("a = b").unwrap_err();
        assert!(e.to_string().contains("position 2"), "{e}");
        let e = parse("'abc").unwrap_err();
        assert!(e.to_string().contains("unterminated"), "{e}");
        assert!(parse("a b").is_err());
        assert!(parse("(a").is_err());
        assert!(parse("x if y").is_err());
        assert!(parse("`$.a")
            .unwrap_err()
            .to_string()
            .contains("unterminated"));
        assert!(parse("`$[` + 1")
            .unwrap_err()
            .to_string()
            .contains("JSONPath"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}1{}", "(".repeat(1_000), ")".repeat(1_000));
        assert!(parse(&deep).unwrap_err().to_string().contains("nested"));
        let minus = format!("{}1", "-".repeat(10_000));
        assert!(parse(&minus).is_err());
        let nots = format!("{}x", "not ".repeat(10_000));
        assert!(parse(&nots).is_err());
        let list = format!("{}{}", "[".repeat(5_000), "]".repeat(5_000));
        assert!(parse(&list).is_err());
    }
}
