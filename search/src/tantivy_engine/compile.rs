//! Turning a checked [`Cond`] into a tantivy query over the fields of
//! [`doc`](super::doc), with visibility as a required clause.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound as Edge;

use lattice_protocol::search::FieldType;
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, EmptyQuery, InvertedIndexRangeQuery, Occur, PhraseQuery,
    Query, TermQuery, TermSetQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Searcher, Term};

use super::doc::{exact_term, field_prefix, typed_prefix, Fields, PREFIX_END};
use crate::plan::{glob_match, glob_prefix, Bound, Cond};
use crate::{SearchError, Visibility};

/// Most terms a wildcard or `like` may expand to.
const MAX_EXPANSION: usize = 50_000;

pub(crate) struct Compiler<'a> {
    pub(crate) fields: &'a Fields,
    pub(crate) searcher: &'a Searcher,
    /// The index's fields and types.
    pub(crate) types: &'a BTreeMap<String, FieldType>,
    /// Free-text weights per string field.
    pub(crate) boosts: HashMap<String, f32>,
}

impl Compiler<'_> {
    /// `cond`, restricted to what `visibility` lets the caller see.
    pub(crate) fn visible(
        &self,
        cond: &Cond,
        visibility: &Visibility,
    ) -> Result<Box<dyn Query>, SearchError> {
        let query = self.compile(cond)?;
        Ok(match visibility {
            Visibility::Bypass => query,
            Visibility::Principals(principals) => {
                let visible: Box<dyn Query> = if principals.is_empty() {
                    Box::new(EmptyQuery)
                } else {
                    Box::new(TermSetQuery::new(
                        principals
                            .iter()
                            .map(|p| Term::from_field_text(self.fields.visible_to, p)),
                    ))
                };
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, query),
                    (Occur::Must, visible),
                ]))
            }
        })
    }

    pub(crate) fn compile(&self, cond: &Cond) -> Result<Box<dyn Query>, SearchError> {
        Ok(match cond {
            Cond::All => Box::new(AllQuery),
            Cond::Words { field, words } => {
                let clauses = words
                    .iter()
                    .map(|word| (Occur::Must, self.word(field.as_deref(), word)))
                    .collect();
                Box::new(BooleanQuery::new(clauses))
            }
            Cond::Phrase { field, words } => {
                let (tantivy_field, prefix) = self.words_field(field.as_deref());
                let terms = words
                    .iter()
                    .map(|word| Term::from_field_text(tantivy_field, &format!("{prefix}{word}")))
                    .collect();
                self.boosted(field.as_deref(), Box::new(PhraseQuery::new(terms)))
            }
            Cond::Wildcard { field, pattern } => {
                let (tantivy_field, prefix) = self.words_field(field.as_deref());
                self.expand(tantivy_field, &prefix, pattern)?
            }
            Cond::Equals { field, value } => Box::new(TermQuery::new(
                Term::from_field_text(self.fields.exact, &exact_term(field, value)),
                IndexRecordOption::Basic,
            )),
            Cond::Range {
                field,
                lower,
                upper,
            } => {
                let ty = self.types.get(field).copied().unwrap_or(FieldType::Number);
                let prefix = typed_prefix(field, ty);
                let edge = |bound: &Option<Bound>, open: Edge<Term>| match bound {
                    None => open,
                    Some(bound) => {
                        let term = self.exact(&exact_term(field, &bound.value));
                        if bound.inclusive {
                            Edge::Included(term)
                        } else {
                            Edge::Excluded(term)
                        }
                    }
                };
                Box::new(InvertedIndexRangeQuery::new(
                    edge(lower, Edge::Included(self.exact(&prefix))),
                    edge(
                        upper,
                        Edge::Excluded(self.exact(&format!("{prefix}{PREFIX_END}"))),
                    ),
                ))
            }
            Cond::Exists { field } => {
                let prefix = field_prefix(field);
                let in_field = |tantivy_field| -> Box<dyn Query> {
                    Box::new(InvertedIndexRangeQuery::new(
                        Edge::Included(Term::from_field_text(tantivy_field, &prefix)),
                        Edge::Excluded(Term::from_field_text(
                            tantivy_field,
                            &format!("{prefix}{PREFIX_END}"),
                        )),
                    ))
                };
                let exact = in_field(self.fields.exact);
                if self.types.get(field) != Some(&FieldType::String) {
                    return Ok(exact);
                }
                // String values too long for an exact term still have words.
                Box::new(BooleanQuery::new(vec![
                    (Occur::Should, exact),
                    (Occur::Should, in_field(self.fields.text)),
                ]))
            }
            Cond::Like { field, pattern } => self.expand(
                self.fields.exact,
                &typed_prefix(field, FieldType::String),
                pattern,
            )?,
            Cond::And(conds) => Box::new(BooleanQuery::new(
                conds
                    .iter()
                    .map(|c| Ok((Occur::Must, self.compile(c)?)))
                    .collect::<Result<_, SearchError>>()?,
            )),
            Cond::Or(conds) => Box::new(BooleanQuery::new(
                conds
                    .iter()
                    .map(|c| Ok((Occur::Should, self.compile(c)?)))
                    .collect::<Result<_, SearchError>>()?,
            )),
            Cond::Not(inner) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, Box::new(AllQuery) as Box<dyn Query>),
                (Occur::MustNot, self.compile(inner)?),
            ])),
        })
    }

    fn exact(&self, text: &str) -> Term {
        Term::from_field_text(self.fields.exact, text)
    }

    /// The tantivy field holding a field's words, and the prefix of its terms.
    fn words_field(&self, field: Option<&str>) -> (Field, String) {
        match field {
            Some(name) => (self.fields.text, field_prefix(name)),
            None => (self.fields.all_text, String::new()),
        }
    }

    /// One word: fielded, or in any string field (scored higher where a
    /// boosted field holds it).
    fn word(&self, field: Option<&str>, word: &str) -> Box<dyn Query> {
        let (tantivy_field, prefix) = self.words_field(field);
        let term = |f, text: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(f, text),
                IndexRecordOption::WithFreqs,
            ))
        };
        let base = term(tantivy_field, &format!("{prefix}{word}"));
        if field.is_some() {
            return self.boosted(field, base);
        }
        if self.boosts.is_empty() {
            return base;
        }
        let mut clauses = vec![(Occur::Must, base)];
        for (name, factor) in &self.boosts {
            let fielded = term(self.fields.text, &format!("{}{word}", field_prefix(name)));
            clauses.push((
                Occur::Should,
                Box::new(BoostQuery::new(fielded, *factor)) as Box<dyn Query>,
            ));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    fn boosted(&self, field: Option<&str>, query: Box<dyn Query>) -> Box<dyn Query> {
        match field.and_then(|name| self.boosts.get(name)) {
            Some(factor) => Box::new(BoostQuery::new(query, *factor)),
            None => query,
        }
    }

    /// Terms of `tantivy_field` that start with `prefix` and whose rest
    /// matches `pattern`, as one query. A pattern that is a literal then `*`
    /// is a term range; anything else is matched against the terms in the
    /// range of its literal start, in every segment.
    fn expand(
        &self,
        tantivy_field: Field,
        prefix: &str,
        pattern: &str,
    ) -> Result<Box<dyn Query>, SearchError> {
        let literal = glob_prefix(pattern);
        let start = format!("{prefix}{literal}");
        let end = format!("{start}{PREFIX_END}");
        if pattern[literal.len()..].chars().all(|c| c == '*') && literal.len() < pattern.len() {
            return Ok(Box::new(InvertedIndexRangeQuery::new(
                Edge::Included(Term::from_field_text(tantivy_field, &start)),
                Edge::Excluded(Term::from_field_text(tantivy_field, &end)),
            )));
        }
        let mut matched = BTreeSet::new();
        for segment in self.searcher.segment_readers() {
            let inverted = segment.inverted_index(tantivy_field).map_err(engine)?;
            let mut stream = inverted
                .terms()
                .range()
                .ge(start.as_bytes())
                .lt(end.as_bytes())
                .into_stream()
                .map_err(engine)?;
            while stream.advance() {
                let Ok(term) = std::str::from_utf8(stream.key()) else {
                    continue;
                };
                if glob_match(pattern, &term[prefix.len()..]) {
                    matched.insert(term.to_string());
                    if matched.len() > MAX_EXPANSION {
                        return Err(SearchError::invalid(format!(
                            "the pattern `{pattern}` matches more than {MAX_EXPANSION} values; make it narrower"
                        )));
                    }
                }
            }
        }
        Ok(Box::new(TermSetQuery::new(
            matched
                .iter()
                .map(|term| Term::from_field_text(tantivy_field, term)),
        )))
    }
}

pub(crate) fn engine(err: impl std::fmt::Display) -> SearchError {
    SearchError::Engine(err.to_string())
}
