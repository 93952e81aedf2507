//! Checking a request against an index's fields, and the engine-neutral
//! plan every engine executes: the matching condition with every field
//! resolved to its type and every value read as that type, the facets and
//! sort keys, the page window, the scroll marker. Also the checks of an
//! entry before it is written, and grouping hits into subjects.
//!
//! This module owns the request rules (what is invalid and why, the default
//! page size, the result window, what a marker is), so that engines agree on
//! them. It must not know any engine: no tantivy or SQL types here, and
//! nothing that does I/O.

use std::collections::BTreeMap;
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, TimeZone, Timelike, Utc};
use lattice_protocol::search::{
    DateInterval, Entry, Facet, FacetKind, FieldType, Filter, QueryMode, RangeBound, ResultEntry,
    ScrollRequest, SearchQuery, SearchRequest, SortOrder, SubjectResult, MAX_PAGE_SIZE,
    MAX_RESULT_WINDOW, MAX_SUBJECT_BYTES,
};
use lattice_protocol::sharing::Principal;
use serde_json::Value;

use crate::query::{self, QueryNode};
use crate::schema::{type_name, value_for, FieldValue};
use crate::{Limits, SearchError, Visibility};

/// Page size when a request gives none.
pub const DEFAULT_LIMIT: usize = 10;
/// Buckets of a terms facet when it gives no size.
pub const DEFAULT_TERMS_SIZE: usize = 10;
/// Most buckets of a terms facet or a numeric histogram.
pub const MAX_BUCKETS: usize = 1_000;

/// One end of a range, read as the field's type.
#[derive(Clone, Debug, PartialEq)]
pub struct Bound {
    pub value: FieldValue,
    pub inclusive: bool,
}

/// What an entry must satisfy, with fields resolved and values typed.
/// Words are already split and lowercased by `text::words`.
#[derive(Clone, Debug, PartialEq)]
pub enum Cond {
    /// Every entry.
    All,
    /// Every word occurs in the field (a string field), or, with no field,
    /// in some string field.
    Words {
        field: Option<String>,
        words: Vec<String>,
    },
    /// The words occur consecutively in one string value.
    Phrase {
        field: Option<String>,
        words: Vec<String>,
    },
    /// Some word matches the lowercased pattern (`*`, `?`; see [`glob_match`]).
    Wildcard {
        field: Option<String>,
        pattern: String,
    },
    /// Some value of the field equals this one (strings: exact, case-sensitive).
    Equals {
        field: String,
        value: FieldValue,
    },
    /// Some value of a number or date field lies between the bounds (`None` open).
    Range {
        field: String,
        lower: Option<Bound>,
        upper: Option<Bound>,
    },
    /// The field has at least one value.
    Exists {
        field: String,
    },
    /// Some whole string value matches the case-sensitive pattern.
    Like {
        field: String,
        pattern: String,
    },
    And(Vec<Cond>),
    Or(Vec<Cond>),
    Not(Box<Cond>),
}

impl Cond {
    /// `And` without needless nesting: `All` parts dropped, one part unwrapped.
    pub fn and(parts: Vec<Cond>) -> Cond {
        let mut kept: Vec<Cond> = parts.into_iter().filter(|c| *c != Cond::All).collect();
        match kept.len() {
            0 => Cond::All,
            1 => kept.pop().expect("one part"),
            _ => Cond::And(kept),
        }
    }
}

/// A facet to compute, checked against the field's type.
#[derive(Clone, Debug, PartialEq)]
pub struct FacetPlan {
    /// The result's name (the request's, or the field name).
    pub name: String,
    pub field: String,
    pub field_type: FieldType,
    pub kind: FacetPlanKind,
}

/// What a facet computes over the entries matching the query and filters
/// (not the post-facet filters). Counts are of entries: an entry with a value
/// twice counts once per bucket; `sum` and `avg` take every value.
#[derive(Clone, Debug, PartialEq)]
pub enum FacetPlanKind {
    /// The `size` values held by most entries, largest count first, ties by
    /// value order.
    Terms {
        size: usize,
    },
    /// `size` buckets `[low + i*w, low + (i+1)*w)` with `w = (high - low) /
    /// size`, every bucket listed even when empty; values outside are not
    /// counted ([`histogram_bucket`]).
    NumericHistogram {
        size: usize,
        low: f64,
        high: f64,
    },
    /// Calendar buckets in UTC ([`date_bucket`]), ascending, empty ones omitted.
    DateHistogram {
        interval: DateInterval,
    },
    Sum,
    /// `null` when there is no value.
    Avg,
    /// Distinct values (exact).
    DistinctCount,
}

/// One sort key. An entry without the field sorts last either way; a
/// multi-valued field sorts by its smallest value ascending, its largest
/// descending. Ties, and everything after the keys, go by [`EntryKey`].
#[derive(Clone, Debug, PartialEq)]
pub struct SortKey {
    pub field: String,
    pub field_type: FieldType,
    pub descending: bool,
}

/// A checked query request.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchPlan {
    /// Query and filters: what facets count.
    pub matching: Cond,
    /// The post-facet filters: what hits (and `total`) must also satisfy.
    pub post_filter: Cond,
    pub facets: Vec<FacetPlan>,
    /// Empty: relevance (descending), then entry key.
    pub sort: Vec<SortKey>,
    /// String fields and their weights in the relevance of free text.
    pub boosts: Vec<(String, f64)>,
    pub offset: usize,
    pub limit: usize,
}

/// A checked scroll request: the next `limit` matching entries in
/// [`EntryKey`] order after `after`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScrollPlan {
    pub matching: Cond,
    pub limit: usize,
    pub after: Option<EntryKey>,
}

/// Where an entry sits in scroll order: by subject, then entry id with the
/// id-less entry first; both compared as bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntryKey {
    pub subject: String,
    pub entry_id: Option<String>,
}

impl EntryKey {
    pub fn new(subject: &str, entry_id: Option<&str>) -> Self {
        Self {
            subject: subject.to_string(),
            entry_id: entry_id.map(str::to_string),
        }
    }

    /// `subject NUL entry_id` (nothing after NUL for the id-less entry).
    /// Subjects and entry ids hold no NUL and ids are never empty
    /// ([`check_entry`]), so byte order of the encoding is key order and
    /// distinct keys encode distinctly.
    pub fn encode(&self) -> String {
        let mut key = String::with_capacity(self.subject.len() + 1 + self.id_len());
        key.push_str(&self.subject);
        key.push('\0');
        if let Some(id) = &self.entry_id {
            key.push_str(id);
        }
        key
    }

    fn id_len(&self) -> usize {
        self.entry_id.as_ref().map_or(0, String::len)
    }

    /// Reads [`EntryKey::encode`]'s form.
    pub fn decode(key: &str) -> Option<Self> {
        let (subject, id) = key.split_once('\0')?;
        Some(Self {
            subject: subject.to_string(),
            entry_id: (!id.is_empty()).then(|| id.to_string()),
        })
    }

    /// The scroll marker after this entry: base64url (no padding) of the
    /// encoded key. Opaque to clients.
    pub fn marker(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.encode())
    }

    /// Reads a marker; anything not made by [`EntryKey::marker`] is invalid.
    pub fn from_marker(marker: &str) -> Result<Self, SearchError> {
        URL_SAFE_NO_PAD
            .decode(marker)
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .and_then(|key| Self::decode(&key))
            .ok_or_else(|| SearchError::invalid("the scroll marker is not valid"))
    }
}

/// The principals a query runs for, or `None` to see everything.
pub fn visible_principals(visibility: &Visibility) -> Option<&[String]> {
    match visibility {
        Visibility::Principals(principals) => Some(principals),
        Visibility::Bypass => None,
    }
}

/// Checks what an entry holds besides its content's fields: the subject
/// (not empty, at most [`MAX_SUBJECT_BYTES`], no NUL), the entry id (not
/// empty, no NUL), the content's size, and `visible_to` (at least one, every
/// one well formed). Answers `visible_to` in canonical short form.
pub fn check_entry(entry: &Entry, limits: &Limits) -> Result<Vec<String>, String> {
    if entry.subject.is_empty() {
        return Err("subject is empty".to_string());
    }
    if entry.subject.len() > MAX_SUBJECT_BYTES {
        return Err(format!(
            "subject is {} bytes, more than the limit of {MAX_SUBJECT_BYTES}",
            entry.subject.len()
        ));
    }
    if entry.subject.contains('\0') {
        return Err("subject contains a NUL character".to_string());
    }
    if let Some(id) = &entry.id {
        if id.is_empty() {
            return Err("entry id is empty (leave it out for the subject's id-less entry)".into());
        }
        if id.len() > MAX_SUBJECT_BYTES {
            return Err(format!(
                "entry id is {} bytes, more than the limit of {MAX_SUBJECT_BYTES}",
                id.len()
            ));
        }
        if id.contains('\0') {
            return Err("entry id contains a NUL character".to_string());
        }
    }
    let mut size = ByteCount(0);
    let size = match serde_json::to_writer(&mut size, &entry.content) {
        Ok(()) => size.0,
        Err(_) => usize::MAX,
    };
    if size > limits.max_entry_bytes {
        return Err(format!(
            "content is {size} bytes, more than the limit of {}",
            limits.max_entry_bytes
        ));
    }
    if entry.visible_to.is_empty() {
        return Err("visible_to names no principal".to_string());
    }
    let mut principals = Vec::with_capacity(entry.visible_to.len());
    for given in &entry.visible_to {
        let principal = Principal::from_str(given).map_err(|err| err.to_string())?;
        let canonical = principal.to_string();
        if !principals.contains(&canonical) {
            principals.push(canonical);
        }
    }
    Ok(principals)
}

/// Counts bytes written, to size JSON without building it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Checks a query request and plans it.
///
/// `bypass_visibility` is not read here: the service decides whether the
/// caller may bypass and passes `Visibility::Bypass` if so.
pub fn plan_search(
    request: &SearchRequest,
    fields: &BTreeMap<String, FieldType>,
) -> Result<SearchPlan, SearchError> {
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    check_limit(limit)?;
    if request.offset.saturating_add(limit) > MAX_RESULT_WINDOW {
        return Err(SearchError::invalid(format!(
            "offset + limit is {}, past the result window of {MAX_RESULT_WINDOW}; use the scroll (/scroll) to page deeper",
            request.offset.saturating_add(limit)
        )));
    }
    let checker = Checker { fields };
    let matching = checker.query(&request.query)?;
    let post_filter = Cond::and(
        request
            .post_facet_filters
            .iter()
            .map(|filter| checker.filter(filter))
            .collect::<Result<_, _>>()?,
    );
    let mut facets = Vec::with_capacity(request.facets.len());
    for facet in &request.facets {
        let planned = checker.facet(facet)?;
        if facets.iter().any(|f: &FacetPlan| f.name == planned.name) {
            return Err(SearchError::invalid(format!(
                "two facets are named `{}`; give one a `name`",
                planned.name
            )));
        }
        facets.push(planned);
    }
    let sort = request
        .sort
        .iter()
        .map(|sort| {
            Ok(SortKey {
                field_type: checker.field(&sort.field_name)?,
                field: sort.field_name.clone(),
                descending: sort.order == SortOrder::Desc,
            })
        })
        .collect::<Result<_, SearchError>>()?;
    let boosts = request
        .boosts
        .iter()
        .map(|boost| {
            checker.string_field(&boost.field_name, "boosts")?;
            if !boost.factor.is_finite() || boost.factor <= 0.0 {
                return Err(SearchError::invalid(format!(
                    "boost of `{}` must be a positive number",
                    boost.field_name
                )));
            }
            Ok((boost.field_name.clone(), boost.factor))
        })
        .collect::<Result<_, SearchError>>()?;
    Ok(SearchPlan {
        matching,
        post_filter,
        facets,
        sort,
        boosts,
        offset: request.offset,
        limit,
    })
}

/// Checks a scroll request and plans it.
pub fn plan_scroll(
    request: &ScrollRequest,
    fields: &BTreeMap<String, FieldType>,
) -> Result<ScrollPlan, SearchError> {
    let limit = request.limit.unwrap_or(DEFAULT_LIMIT);
    check_limit(limit)?;
    if limit == 0 {
        return Err(SearchError::invalid("a scroll's limit must be at least 1"));
    }
    let after = request
        .marker
        .as_deref()
        .map(EntryKey::from_marker)
        .transpose()?;
    Ok(ScrollPlan {
        matching: plan_query(&request.query, fields)?,
        limit,
        after,
    })
}

/// Checks a query and its filters (a delete-by-query, or a request's
/// matching part).
pub fn plan_query(
    query: &SearchQuery,
    fields: &BTreeMap<String, FieldType>,
) -> Result<Cond, SearchError> {
    Checker { fields }.query(query)
}

fn check_limit(limit: usize) -> Result<(), SearchError> {
    if limit > MAX_PAGE_SIZE {
        return Err(SearchError::invalid(format!(
            "limit {limit} is more than the largest page of {MAX_PAGE_SIZE}"
        )));
    }
    Ok(())
}

struct Checker<'a> {
    fields: &'a BTreeMap<String, FieldType>,
}

impl Checker<'_> {
    fn field(&self, name: &str) -> Result<FieldType, SearchError> {
        self.fields
            .get(name)
            .copied()
            .ok_or_else(|| SearchError::invalid(format!("unknown field `{name}`")))
    }

    fn string_field(&self, name: &str, what: &str) -> Result<(), SearchError> {
        match self.field(name)? {
            FieldType::String => Ok(()),
            other => Err(wrong_type(name, other, what, "string fields")),
        }
    }

    fn query(&self, query: &SearchQuery) -> Result<Cond, SearchError> {
        let text = query.q.as_deref().unwrap_or("");
        let node = match query.mode {
            QueryMode::Simple => query::simple(text),
            QueryMode::Advanced => query::parse(text).map_err(|err| SearchError::Invalid {
                message: err.to_string(),
                position: Some(err.position),
            })?,
        };
        let mut parts = vec![self.node(&node)?];
        for filter in &query.filters {
            parts.push(self.filter(filter)?);
        }
        Ok(Cond::and(parts))
    }

    fn node(&self, node: &QueryNode) -> Result<Cond, SearchError> {
        Ok(match node {
            QueryNode::All => Cond::All,
            QueryNode::Term { field, text } | QueryNode::Phrase { field, text } => {
                let phrase = matches!(node, QueryNode::Phrase { .. });
                if let Some(name) = field {
                    let ty = self.field(name)?;
                    if ty != FieldType::String {
                        return Ok(Cond::Equals {
                            field: name.clone(),
                            value: self.read(name, ty, &Value::String(text.clone()))?,
                        });
                    }
                }
                let words: Vec<String> = crate::text::words(text).collect();
                match (words.len(), phrase) {
                    // Only punctuation: nothing to look for.
                    (0, _) => Cond::All,
                    (1, _) | (_, false) => Cond::Words {
                        field: field.clone(),
                        words,
                    },
                    (_, true) => Cond::Phrase {
                        field: field.clone(),
                        words,
                    },
                }
            }
            QueryNode::Wildcard { field, pattern } => {
                if let Some(name) = field {
                    self.string_field(name, "wildcards")?;
                }
                Cond::Wildcard {
                    field: field.clone(),
                    pattern: pattern.clone(),
                }
            }
            QueryNode::Range {
                field,
                lower,
                lower_inclusive,
                upper,
                upper_inclusive,
            } => {
                let ty = self.range_field(field)?;
                let bound = |text: &Option<String>, inclusive: bool| {
                    text.as_ref()
                        .map(|text| {
                            Ok::<_, SearchError>(Bound {
                                value: self.read(field, ty, &Value::String(text.clone()))?,
                                inclusive,
                            })
                        })
                        .transpose()
                };
                Cond::Range {
                    field: field.clone(),
                    lower: bound(lower, *lower_inclusive)?,
                    upper: bound(upper, *upper_inclusive)?,
                }
            }
            QueryNode::And(nodes) => Cond::And(self.nodes(nodes)?),
            QueryNode::Or(nodes) => Cond::Or(self.nodes(nodes)?),
            QueryNode::Not(inner) => Cond::Not(Box::new(self.node(inner)?)),
        })
    }

    fn nodes(&self, nodes: &[QueryNode]) -> Result<Vec<Cond>, SearchError> {
        nodes.iter().map(|node| self.node(node)).collect()
    }

    fn range_field(&self, name: &str) -> Result<FieldType, SearchError> {
        match self.field(name)? {
            ty @ (FieldType::Number | FieldType::Date) => Ok(ty),
            other => Err(wrong_type(name, other, "ranges", "number and date fields")),
        }
    }

    fn read(&self, field: &str, ty: FieldType, value: &Value) -> Result<FieldValue, SearchError> {
        value_for(ty, value).map_err(|why| SearchError::invalid(format!("field `{field}`: {why}")))
    }

    fn filter(&self, filter: &Filter) -> Result<Cond, SearchError> {
        Ok(match filter {
            Filter::MatchAny { field_name, values } | Filter::MatchAll { field_name, values } => {
                let ty = self.field(field_name)?;
                if values.is_empty() {
                    return Err(SearchError::invalid(format!(
                        "a match filter on `{field_name}` needs at least one value"
                    )));
                }
                let conds = values
                    .iter()
                    .map(|value| {
                        Ok(Cond::Equals {
                            field: field_name.clone(),
                            value: self.read(field_name, ty, value)?,
                        })
                    })
                    .collect::<Result<Vec<_>, SearchError>>()?;
                if matches!(filter, Filter::MatchAny { .. }) {
                    Cond::Or(conds)
                } else {
                    Cond::And(conds)
                }
            }
            Filter::Range { field_name, values } => {
                let ty = self.range_field(field_name)?;
                if values.is_empty() {
                    return Err(SearchError::invalid(format!(
                        "a range filter on `{field_name}` needs at least one range"
                    )));
                }
                Cond::Or(
                    values
                        .iter()
                        .map(|range| self.range_bound(field_name, ty, range))
                        .collect::<Result<_, _>>()?,
                )
            }
            Filter::Exists { field_name } => {
                self.field(field_name)?;
                Cond::Exists {
                    field: field_name.clone(),
                }
            }
            Filter::Like { field_name, value } => {
                self.string_field(field_name, "like filters")?;
                Cond::Like {
                    field: field_name.clone(),
                    pattern: value.clone(),
                }
            }
            Filter::Not { filter } => Cond::Not(Box::new(self.filter(filter)?)),
            Filter::And { filters } => Cond::and(self.filters(filters)?),
            Filter::Or { filters } => {
                if filters.is_empty() {
                    return Err(SearchError::invalid(
                        "an `or` filter needs at least one filter",
                    ));
                }
                Cond::Or(self.filters(filters)?)
            }
        })
    }

    fn filters(&self, filters: &[Filter]) -> Result<Vec<Cond>, SearchError> {
        filters.iter().map(|filter| self.filter(filter)).collect()
    }

    fn range_bound(
        &self,
        field: &str,
        ty: FieldType,
        range: &RangeBound,
    ) -> Result<Cond, SearchError> {
        let bound = |value: &Option<Value>| match value {
            None => Ok::<_, SearchError>(None),
            Some(Value::String(star)) if star == "*" => Ok(None),
            Some(value) => Ok(Some(Bound {
                value: self.read(field, ty, value)?,
                inclusive: true,
            })),
        };
        Ok(Cond::Range {
            field: field.to_string(),
            lower: bound(&range.from)?,
            upper: bound(&range.to)?,
        })
    }

    fn facet(&self, facet: &Facet) -> Result<FacetPlan, SearchError> {
        let field = facet.field_name.as_str();
        let ty = self.field(field)?;
        let need = |wanted: FieldType, what: &str, types: &str| {
            if ty == wanted {
                Ok(())
            } else {
                Err(wrong_type(field, ty, what, types))
            }
        };
        let kind = match &facet.kind {
            FacetKind::Terms { size } => {
                if ty == FieldType::Date {
                    return Err(wrong_type(
                        field,
                        ty,
                        "terms facets",
                        "string, number and boolean fields (use a date_histogram)",
                    ));
                }
                let size = size.unwrap_or(DEFAULT_TERMS_SIZE);
                check_buckets(field, size)?;
                FacetPlanKind::Terms { size }
            }
            FacetKind::NumericHistogram {
                size,
                histogram_range,
            } => {
                need(
                    FieldType::Number,
                    "numeric_histogram facets",
                    "number fields",
                )?;
                check_buckets(field, *size)?;
                let (low, high) = (histogram_range.low, histogram_range.high);
                if !(low.is_finite() && high.is_finite() && low < high) {
                    return Err(SearchError::invalid(format!(
                        "the histogram of `{field}` needs low < high"
                    )));
                }
                FacetPlanKind::NumericHistogram {
                    size: *size,
                    low,
                    high,
                }
            }
            FacetKind::DateHistogram { date_interval } => {
                need(FieldType::Date, "date_histogram facets", "date fields")?;
                FacetPlanKind::DateHistogram {
                    interval: *date_interval,
                }
            }
            FacetKind::Sum => {
                need(FieldType::Number, "sum facets", "number fields")?;
                FacetPlanKind::Sum
            }
            FacetKind::Avg => {
                need(FieldType::Number, "avg facets", "number fields")?;
                FacetPlanKind::Avg
            }
            FacetKind::DistinctCount => FacetPlanKind::DistinctCount,
        };
        Ok(FacetPlan {
            name: facet.name.clone().unwrap_or_else(|| field.to_string()),
            field: field.to_string(),
            field_type: ty,
            kind,
        })
    }
}

fn check_buckets(field: &str, size: usize) -> Result<(), SearchError> {
    if size == 0 || size > MAX_BUCKETS {
        return Err(SearchError::invalid(format!(
            "the facet on `{field}` asks for {size} buckets; give 1 to {MAX_BUCKETS}"
        )));
    }
    Ok(())
}

fn wrong_type(field: &str, ty: FieldType, what: &str, types: &str) -> SearchError {
    SearchError::invalid(format!(
        "`{field}` is a {} field; {what} apply to {types}",
        type_name(ty)
    ))
}

/// The bucket of a numeric histogram a value falls in, if any.
pub fn histogram_bucket(value: f64, low: f64, high: f64, size: usize) -> Option<usize> {
    if !(low..high).contains(&value) {
        return None;
    }
    let width = (high - low) / size as f64;
    // Rounding can put a value just under `high` one past the end.
    Some((((value - low) / width) as usize).min(size - 1))
}

/// The lower bound of bucket `index` of a numeric histogram.
pub fn histogram_bound(index: usize, low: f64, high: f64, size: usize) -> f64 {
    if index == size {
        return high;
    }
    low + (high - low) * index as f64 / size as f64
}

/// The calendar bucket (start, exclusive end) of a date, in UTC.
pub fn date_bucket(date: DateTime<Utc>, interval: DateInterval) -> (DateTime<Utc>, DateTime<Utc>) {
    let day = |y, m, d| {
        NaiveDate::from_ymd_opt(y, m, d)
            .expect("a valid day")
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc()
    };
    match interval {
        DateInterval::Year => {
            let start = day(date.year(), 1, 1);
            (start, start + Months::new(12))
        }
        DateInterval::Month => {
            let start = day(date.year(), date.month(), 1);
            (start, start + Months::new(1))
        }
        DateInterval::Day => {
            let start = day(date.year(), date.month(), date.day());
            (start, start + Duration::days(1))
        }
        DateInterval::Hour => {
            let start = Utc
                .with_ymd_and_hms(date.year(), date.month(), date.day(), date.hour(), 0, 0)
                .single()
                .expect("a valid hour");
            (start, start + Duration::hours(1))
        }
        DateInterval::Minute => {
            let start = Utc
                .with_ymd_and_hms(
                    date.year(),
                    date.month(),
                    date.day(),
                    date.hour(),
                    date.minute(),
                    0,
                )
                .single()
                .expect("a valid minute");
            (start, start + Duration::minutes(1))
        }
    }
}

/// A number as results show it: integral values within f64's exact range
/// as JSON integers (`3`, not `3.0`), so that every engine answers the same.
pub fn number_value(n: f64) -> Value {
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    if n.fract() == 0.0 && n.abs() < EXACT {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// A date as results show it (RFC 3339, UTC, `Z`).
pub fn format_date(date: DateTime<Utc>) -> String {
    date.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

/// Whether `text` matches `pattern` as a whole: `*` any run of characters,
/// `?` one character, everything else itself.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    // Greedy with backtracking to the last `*`: linear in practice.
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == '?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((star_p, star_t)) => {
                    p = star_p + 1;
                    t = star_t + 1;
                    star = Some((star_p, star_t + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// The literal start of a glob pattern (before its first `*` or `?`), which
/// every match begins with.
pub fn glob_prefix(pattern: &str) -> &str {
    let end = pattern.find(['*', '?']).unwrap_or(pattern.len());
    &pattern[..end]
}

/// Groups hits, in order, into one [`SubjectResult`] per run of
/// consecutive hits of one subject.
pub fn group_by_subject(
    hits: impl IntoIterator<Item = (String, ResultEntry)>,
) -> Vec<SubjectResult> {
    let mut groups: Vec<SubjectResult> = Vec::new();
    for (subject, entry) in hits {
        match groups.last_mut() {
            Some(last) if last.subject == subject => last.entries.push(entry),
            _ => groups.push(SubjectResult {
                subject,
                entries: vec![entry],
            }),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;
    use lattice_protocol::search::{Boost, HistogramRange, SortField};
    use serde_json::json;

    fn fields() -> BTreeMap<String, FieldType> {
        BTreeMap::from([
            ("title".to_string(), FieldType::String),
            ("size".to_string(), FieldType::Number),
            ("at".to_string(), FieldType::Date),
            ("ok".to_string(), FieldType::Boolean),
        ])
    }

    fn request(q: &str) -> SearchRequest {
        SearchRequest {
            query: SearchQuery {
                q: Some(q.to_string()),
                mode: QueryMode::Advanced,
                filters: vec![],
            },
            ..SearchRequest::default()
        }
    }

    fn invalid(result: Result<SearchPlan, SearchError>) -> (String, Option<usize>) {
        match result {
            Err(SearchError::Invalid { message, position }) => (message, position),
            other => panic!("expected invalid, got {other:?}"),
        }
    }

    fn facet(field: &str, kind: FacetKind) -> Facet {
        Facet {
            name: None,
            field_name: field.to_string(),
            kind,
        }
    }

    #[test]
    fn defaults_and_typed_query_values() {
        let plan = plan_search(
            &request("size:[1 TO *} title:Crystal at:2024-01-02 ok:true"),
            &fields(),
        )
        .expect("plans");
        assert_eq!(plan.limit, DEFAULT_LIMIT);
        assert_eq!(plan.offset, 0);
        assert_eq!(plan.post_filter, Cond::All);
        let Cond::And(parts) = plan.matching else {
            panic!("and")
        };
        assert_eq!(
            parts[0],
            Cond::Range {
                field: "size".into(),
                lower: Some(Bound {
                    value: FieldValue::Number(1.0),
                    inclusive: true
                }),
                upper: None,
            }
        );
        assert_eq!(
            parts[1],
            Cond::Words {
                field: Some("title".into()),
                words: vec!["crystal".into()]
            }
        );
        assert!(matches!(
            parts[2],
            Cond::Equals {
                value: FieldValue::Date(_),
                ..
            }
        ));
        assert_eq!(
            parts[3],
            Cond::Equals {
                field: "ok".into(),
                value: FieldValue::Boolean(true)
            }
        );
    }

    #[test]
    fn unknown_fields_are_named() {
        let (message, _) = invalid(plan_search(&request("nope:x"), &fields()));
        assert!(message.contains("`nope`"), "{message}");
        let mut req = request("");
        req.query.filters = vec![Filter::Not {
            filter: Box::new(Filter::Exists {
                field_name: "missing.field".into(),
            }),
        }];
        assert!(invalid(plan_search(&req, &fields()))
            .0
            .contains("`missing.field`"));
        let mut req = request("");
        req.sort = vec![SortField {
            field_name: "zzz".into(),
            order: SortOrder::Asc,
        }];
        assert!(invalid(plan_search(&req, &fields())).0.contains("`zzz`"));
    }

    #[test]
    fn wrong_types_are_invalid() {
        let cases = [
            request("title:[a TO b]"),
            request("size:abc"),
            request("size:1*"),
            {
                let mut r = request("");
                r.query.filters = vec![Filter::MatchAny {
                    field_name: "size".into(),
                    values: vec![json!("big")],
                }];
                r
            },
            {
                let mut r = request("");
                r.query.filters = vec![Filter::Like {
                    field_name: "size".into(),
                    value: "1*".into(),
                }];
                r
            },
            {
                let mut r = request("");
                r.post_facet_filters = vec![Filter::Range {
                    field_name: "ok".into(),
                    values: vec![RangeBound::default()],
                }];
                r
            },
            {
                let mut r = request("");
                r.boosts = vec![Boost {
                    field_name: "size".into(),
                    factor: 2.0,
                }];
                r
            },
        ];
        for req in cases {
            invalid(plan_search(&req, &fields()));
        }
    }

    #[test]
    fn facets_check_field_types() {
        let histogram = FacetKind::NumericHistogram {
            size: 4,
            histogram_range: HistogramRange {
                low: 0.0,
                high: 8.0,
            },
        };
        let bad = [
            facet("title", histogram.clone()),
            facet("title", FacetKind::Sum),
            facet("at", FacetKind::Avg),
            facet(
                "size",
                FacetKind::DateHistogram {
                    date_interval: DateInterval::Day,
                },
            ),
            facet("at", FacetKind::Terms { size: None }),
            facet("title", FacetKind::Terms { size: Some(0) }),
            facet("title", FacetKind::Terms { size: Some(1001) }),
        ];
        for f in bad {
            let mut req = request("");
            req.facets = vec![f.clone()];
            let (message, _) = invalid(plan_search(&req, &fields()));
            assert!(
                message.contains(&format!("`{}`", f.field_name)),
                "{message}"
            );
        }
        let mut req = request("");
        req.facets = vec![
            facet("size", histogram),
            facet("title", FacetKind::Terms { size: None }),
            facet("at", FacetKind::DistinctCount),
        ];
        let plan = plan_search(&req, &fields()).expect("plans");
        assert_eq!(plan.facets[1].kind, FacetPlanKind::Terms { size: 10 });
        assert_eq!(plan.facets[2].name, "at");

        req.facets.push(facet("title", FacetKind::DistinctCount));
        assert!(invalid(plan_search(&req, &fields()))
            .0
            .contains("two facets"));
    }

    #[test]
    fn page_limits() {
        let mut req = request("");
        req.limit = Some(MAX_PAGE_SIZE + 1);
        invalid(plan_search(&req, &fields()));
        req.limit = Some(MAX_PAGE_SIZE);
        req.offset = MAX_RESULT_WINDOW - MAX_PAGE_SIZE;
        assert!(plan_search(&req, &fields()).is_ok());
        req.offset += 1;
        let (message, _) = invalid(plan_search(&req, &fields()));
        assert!(message.contains("scroll"), "{message}");
    }

    #[test]
    fn syntax_errors_carry_their_position() {
        let (message, position) = invalid(plan_search(&request("a AND (b"), &fields()));
        assert_eq!(position, Some(6));
        assert!(message.contains("position 6"), "{message}");
        // The simple syntax has no syntax errors.
        let mut req = request("a AND (b");
        req.query.mode = QueryMode::Simple;
        assert!(plan_search(&req, &fields()).is_ok());
    }

    #[test]
    fn markers_round_trip_and_bad_ones_are_invalid() {
        for key in [EntryKey::new("s", None), EntryKey::new("a:b/ü", Some("v1"))] {
            assert_eq!(EntryKey::from_marker(&key.marker()).expect("decodes"), key);
        }
        assert!(EntryKey::new("a", None).encode() < EntryKey::new("a", Some("0")).encode());
        assert!(EntryKey::new("a", Some("z")).encode() < EntryKey::new("a0", None).encode());
        for bad in ["", "!!", "YWJj"] {
            assert!(matches!(
                EntryKey::from_marker(bad),
                Err(SearchError::Invalid { .. })
            ));
        }
        let scroll = ScrollRequest {
            marker: Some("not a marker".into()),
            ..ScrollRequest::default()
        };
        assert!(plan_scroll(&scroll, &fields()).is_err());
        let scroll = ScrollRequest {
            marker: Some(EntryKey::new("x", None).marker()),
            ..ScrollRequest::default()
        };
        let plan = plan_scroll(&scroll, &fields()).expect("plans");
        assert_eq!(plan.after, Some(EntryKey::new("x", None)));
        assert_eq!(plan.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn entries_are_checked() {
        let entry = |subject: &str, id: Option<&str>, visible: &[&str]| Entry {
            subject: subject.to_string(),
            id: id.map(str::to_string),
            content: json!({"a": 1}),
            visible_to: visible.iter().map(|s| s.to_string()).collect(),
        };
        let id = uuid::Uuid::new_v4();
        assert_eq!(
            check_entry(
                &entry(
                    "s",
                    None,
                    &["public", &format!("urn:globus:groups:id:{id}")]
                ),
                &Limits::default()
            ),
            Ok(vec!["public".to_string(), format!("group:{id}")])
        );
        let limits = Limits::default();
        assert!(check_entry(&entry("", None, &["public"]), &limits).is_err());
        assert!(check_entry(&entry(&"s".repeat(501), None, &["public"]), &limits).is_err());
        assert!(check_entry(&entry("s", Some(""), &["public"]), &limits).is_err());
        assert!(check_entry(&entry("s", None, &[]), &limits).is_err());
        let err = check_entry(&entry("s", None, &["identity:nope"]), &limits).expect_err("bad");
        assert!(err.contains("identity:nope"), "{err}");
        let small = Limits {
            max_entry_bytes: 4,
            ..Limits::default()
        };
        assert!(check_entry(&entry("s", None, &["public"]), &small).is_err());
    }

    #[test]
    fn groups_consecutive_hits() {
        let hit = |s: &str, id: &str| {
            (
                s.to_string(),
                ResultEntry {
                    entry_id: Some(id.to_string()),
                    content: json!({}),
                    visible_to: None,
                },
            )
        };
        let groups = group_by_subject([hit("a", "1"), hit("a", "2"), hit("b", "1"), hit("a", "3")]);
        let shape: Vec<(&str, usize)> = groups
            .iter()
            .map(|g| (g.subject.as_str(), g.entries.len()))
            .collect();
        assert_eq!(shape, [("a", 2), ("b", 1), ("a", 1)]);
    }

    #[test]
    fn globs() {
        assert!(glob_match("cr*st?l", "crystal"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "aXbYbZc"));
        assert!(!glob_match("a*b", "acbx"));
        assert!(!glob_match("?", ""));
        assert!(glob_match("Run_??", "Run_12"));
        assert!(!glob_match("run*", "Run1"), "case-sensitive");
        assert_eq!(glob_prefix("abc*d?"), "abc");
    }

    #[test]
    fn histogram_and_date_buckets() {
        assert_eq!(histogram_bucket(0.0, 0.0, 10.0, 5), Some(0));
        assert_eq!(histogram_bucket(9.999, 0.0, 10.0, 5), Some(4));
        assert_eq!(histogram_bucket(10.0, 0.0, 10.0, 5), None);
        assert_eq!(histogram_bucket(-1.0, 0.0, 10.0, 5), None);
        assert_eq!(histogram_bound(2, 0.0, 10.0, 5), 4.0);
        let at = DateTime::parse_from_rfc3339("2024-12-31T23:59:30Z")
            .expect("date")
            .with_timezone(&Utc);
        let (start, end) = date_bucket(at, DateInterval::Month);
        assert_eq!(format_date(start), "2024-12-01T00:00:00Z");
        assert_eq!(format_date(end), "2025-01-01T00:00:00Z");
        let (start, end) = date_bucket(at, DateInterval::Minute);
        assert_eq!(format_date(start), "2024-12-31T23:59:00Z");
        assert_eq!(format_date(end), "2025-01-01T00:00:00Z");
        assert_eq!(
            format_date(date_bucket(at, DateInterval::Year).0),
            "2024-01-01T00:00:00Z"
        );
    }
}
