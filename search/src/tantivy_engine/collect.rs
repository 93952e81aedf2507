//! Collectors over the matching documents: the page of hits in sort order
//! (with the total), and the facets. Both work on term ordinals of the
//! FAST `key` and `exact` columns: within a segment ordinal order is term
//! order, which [`doc`](super::doc) makes value order, so segments sort and
//! count by ordinals and only the survivors are turned into bytes to merge.

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::StrColumn;
use tantivy::index::SegmentId;
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader, TantivyError};

use super::doc::{decode_exact, typed_prefix};
use crate::plan::{date_bucket, histogram_bucket, FacetPlan, FacetPlanKind, SortKey};
use crate::schema::FieldValue;

/// The ordinals `[start, end)` of the terms starting with `prefix`.
fn ordinal_range(column: &StrColumn, prefix: &str) -> tantivy::Result<(u64, u64)> {
    let dictionary = column.dictionary();
    let first_at_or_after = |key: &[u8]| -> tantivy::Result<u64> {
        let mut stream = dictionary.range().ge(key).into_stream()?;
        Ok(if stream.advance() {
            stream.term_ord()
        } else {
            dictionary.num_terms() as u64
        })
    };
    let start = first_at_or_after(prefix.as_bytes())?;
    let mut end_key = prefix.as_bytes().to_vec();
    // No UTF-8 text holds 0xFF: past every term with this prefix.
    end_key.push(0xFF);
    let end = first_at_or_after(&end_key)?;
    Ok((start, end))
}

fn str_column(reader: &SegmentReader, name: &str) -> tantivy::Result<Option<StrColumn>> {
    reader.fast_fields().str(name)
}

/// Compares optional sort values: missing last whichever the direction.
fn cmp_sort<T: Ord>(a: &[Option<T>], b: &[Option<T>], descending: &[bool]) -> Ordering {
    for ((x, y), desc) in a.iter().zip(b).zip(descending) {
        let order = match (x, y) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) if *desc => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
        };
        if order != Ordering::Equal {
            return order;
        }
    }
    Ordering::Equal
}

/// One hit that survived its segment's cut, with what it sorts by.
#[derive(Debug)]
pub(crate) struct Hit {
    pub(crate) score: Score,
    pub(crate) sort: Vec<Option<Vec<u8>>>,
    pub(crate) key: Vec<u8>,
    pub(crate) address: DocAddress,
}

/// The first `window` hits in order (sort keys, else relevance; then entry
/// key), and how many documents matched.
pub(crate) struct HitsCollector {
    /// `name NUL tag` of each sort field, and its direction.
    sort_prefixes: Vec<String>,
    descending: Vec<bool>,
    by_relevance: bool,
    window: usize,
    /// Only entries whose key sorts after this one (a scroll's marker).
    after: Option<Vec<u8>>,
}

impl HitsCollector {
    pub(crate) fn new(sort: &[SortKey], window: usize) -> Self {
        Self {
            sort_prefixes: sort
                .iter()
                .map(|key| typed_prefix(&key.field, key.field_type))
                .collect(),
            descending: sort.iter().map(|key| key.descending).collect(),
            by_relevance: sort.is_empty(),
            window,
            after: None,
        }
    }

    /// Every match in entry-key order (no scoring).
    pub(crate) fn by_key(window: usize) -> Self {
        Self {
            sort_prefixes: Vec::new(),
            descending: Vec::new(),
            by_relevance: false,
            window,
            after: None,
        }
    }

    /// Keeps only entries whose encoded key sorts after `key`. Done on key
    /// ordinals here rather than by a range query, which would walk every
    /// key term after the marker on each page of a deep scroll.
    pub(crate) fn after(mut self, key: Option<String>) -> Self {
        self.after = key.map(String::into_bytes);
        self
    }

    fn cmp(&self, a: &Hit, b: &Hit) -> Ordering {
        cmp_sort(&a.sort, &b.sort, &self.descending)
            .then_with(|| self.cmp_score(a.score, b.score))
            .then_with(|| a.key.cmp(&b.key))
    }

    fn cmp_score(&self, a: Score, b: Score) -> Ordering {
        if self.by_relevance {
            b.partial_cmp(&a).unwrap_or(Ordering::Equal)
        } else {
            Ordering::Equal
        }
    }
}

struct Row {
    doc: DocId,
    score: Score,
    sort: Vec<Option<u64>>,
    key: u64,
}

pub(crate) struct HitsSegment {
    segment: SegmentOrdinal,
    key: StrColumn,
    exact: Option<StrColumn>,
    ranges: Vec<(u64, u64)>,
    descending: Vec<bool>,
    by_relevance: bool,
    window: usize,
    /// Ordinals of keys below this are before the scroll's marker.
    first_key: u64,
    rows: Vec<Row>,
    /// Matches already dropped from `rows` by pruning.
    matched: u64,
}

impl Collector for HitsCollector {
    type Fruit = (u64, Vec<Hit>);
    type Child = HitsSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<HitsSegment> {
        let key = str_column(reader, "key")?
            .ok_or_else(|| TantivyError::InternalError("segment without keys".into()))?;
        let first_key = match &self.after {
            None => 0,
            Some(after) => {
                let dictionary = key.dictionary();
                let mut stream = dictionary.range().gt(after).into_stream()?;
                if stream.advance() {
                    stream.term_ord()
                } else {
                    dictionary.num_terms() as u64
                }
            }
        };
        let exact = str_column(reader, "exact")?;
        let ranges = match &exact {
            Some(column) => self
                .sort_prefixes
                .iter()
                .map(|prefix| ordinal_range(column, prefix))
                .collect::<tantivy::Result<_>>()?,
            None => vec![(0, 0); self.sort_prefixes.len()],
        };
        Ok(HitsSegment {
            segment,
            key,
            exact,
            ranges,
            descending: self.descending.clone(),
            by_relevance: self.by_relevance,
            window: self.window,
            first_key,
            rows: Vec::new(),
            matched: 0,
        })
    }

    fn requires_scoring(&self) -> bool {
        self.by_relevance
    }

    fn merge_fruits(&self, fruits: Vec<(u64, Vec<Hit>)>) -> tantivy::Result<(u64, Vec<Hit>)> {
        let mut total = 0;
        let mut hits = Vec::new();
        for (count, segment_hits) in fruits {
            total += count;
            hits.extend(segment_hits);
        }
        hits.sort_by(|a, b| self.cmp(a, b));
        hits.truncate(self.window);
        Ok((total, hits))
    }
}

/// Rows a segment gathers before it drops those past the window.
const PRUNE_AT: usize = 4_096;

impl HitsSegment {
    /// Drops the rows that can no longer be in the window.
    fn prune(&mut self) {
        let before = self.rows.len();
        let mut rows = std::mem::take(&mut self.rows);
        if rows.len() > self.window {
            if self.window > 0 {
                rows.select_nth_unstable_by(self.window - 1, |a, b| self.cmp_rows(a, b));
            }
            rows.truncate(self.window);
        }
        self.matched += (before - rows.len()) as u64;
        self.rows = rows;
    }

    fn cmp_rows(&self, a: &Row, b: &Row) -> Ordering {
        cmp_sort(&a.sort, &b.sort, &self.descending)
            .then_with(|| {
                if self.by_relevance {
                    b.score.partial_cmp(&a.score).unwrap_or(Ordering::Equal)
                } else {
                    Ordering::Equal
                }
            })
            .then_with(|| a.key.cmp(&b.key))
    }
}

impl SegmentCollector for HitsSegment {
    type Fruit = (u64, Vec<Hit>);

    fn collect(&mut self, doc: DocId, score: Score) {
        let key = self.key.term_ords(doc).next().unwrap_or(u64::MAX);
        if key < self.first_key {
            return;
        }
        let sort = match &self.exact {
            Some(exact) => self
                .ranges
                .iter()
                .zip(&self.descending)
                .map(|(&(start, end), &desc)| {
                    let values = exact
                        .term_ords(doc)
                        .filter(|ord| (start..end).contains(ord));
                    if desc {
                        values.max()
                    } else {
                        values.min()
                    }
                })
                .collect(),
            None => vec![None; self.ranges.len()],
        };
        self.rows.push(Row {
            doc,
            score,
            sort,
            key,
        });
        // Keep memory to a few windows, whatever the number of matches.
        if self.rows.len() >= PRUNE_AT.max(self.window.saturating_mul(2)) {
            self.prune();
        }
    }

    fn harvest(mut self) -> (u64, Vec<Hit>) {
        let total = self.matched + self.rows.len() as u64;
        self.prune();
        let rows = std::mem::take(&mut self.rows);
        let bytes_of = |column: &StrColumn, ord: u64| -> Vec<u8> {
            let mut buffer = Vec::new();
            match column.dictionary().ord_to_term(ord, &mut buffer) {
                Ok(true) => buffer,
                _ => Vec::new(),
            }
        };
        let hits = rows
            .into_iter()
            .map(|row| Hit {
                score: row.score,
                sort: row
                    .sort
                    .iter()
                    .map(|ord| {
                        ord.and_then(|ord| self.exact.as_ref().map(|column| bytes_of(column, ord)))
                    })
                    .collect(),
                key: bytes_of(&self.key, row.key),
                address: DocAddress::new(self.segment, row.doc),
            })
            .collect();
        (total, hits)
    }
}

/// A facet's counts or statistic from some segments, before it is shaped
/// into a result.
#[derive(Debug)]
pub(crate) enum FacetPartial {
    /// Terms and distinct counts: entries per value (tagged value bytes).
    Values(BTreeMap<Vec<u8>, u64>),
    /// Numeric histogram: entries per bucket.
    Buckets(Vec<u64>),
    /// Date histogram: entries per bucket start (microseconds).
    Dates(BTreeMap<i64, u64>),
    /// Sum and avg: the sum and the number of values.
    Stats { sum: f64, values: u64 },
}

impl FacetPartial {
    fn merge(&mut self, other: FacetPartial) {
        match (self, other) {
            (FacetPartial::Values(a), FacetPartial::Values(b)) => {
                for (value, count) in b {
                    *a.entry(value).or_default() += count;
                }
            }
            (FacetPartial::Buckets(a), FacetPartial::Buckets(b)) => {
                for (x, y) in a.iter_mut().zip(b) {
                    *x += y;
                }
            }
            (FacetPartial::Dates(a), FacetPartial::Dates(b)) => {
                for (start, count) in b {
                    *a.entry(start).or_default() += count;
                }
            }
            (
                FacetPartial::Stats { sum, values },
                FacetPartial::Stats {
                    sum: other_sum,
                    values: other_values,
                },
            ) => {
                *sum += other_sum;
                *values += other_values;
            }
            _ => {}
        }
    }
}

/// Every facet of a request over the matching documents.
pub(crate) struct FacetsCollector {
    facets: Vec<FacetPlan>,
    cache: Arc<ValueCache>,
}

impl FacetsCollector {
    pub(crate) fn new(facets: &[FacetPlan], cache: Arc<ValueCache>) -> Self {
        Self {
            facets: facets.to_vec(),
            cache,
        }
    }
}

/// Per-segment state of one facet.
enum FacetState {
    Ords(HashMap<u64, u64>),
    Buckets(Vec<u64>),
    Dates(HashMap<i64, u64>),
    Stats { sum: f64, values: u64 },
}

pub(crate) struct FacetsSegment {
    exact: Option<StrColumn>,
    facets: Vec<FacetPlan>,
    ranges: Vec<(u64, u64)>,
    states: Vec<FacetState>,
    /// Decoded values of each facet's range, for the facets that need them.
    values: Vec<Option<SegmentValues>>,
    ords: Vec<u64>,
}

impl Collector for FacetsCollector {
    type Fruit = Vec<FacetPartial>;
    type Child = FacetsSegment;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<FacetsSegment> {
        let exact = str_column(reader, "exact")?;
        let ranges = match &exact {
            Some(column) => self
                .facets
                .iter()
                .map(|facet| ordinal_range(column, &typed_prefix(&facet.field, facet.field_type)))
                .collect::<tantivy::Result<_>>()?,
            None => vec![(0, 0); self.facets.len()],
        };
        let states = self
            .facets
            .iter()
            .map(|facet| match facet.kind {
                FacetPlanKind::Terms { .. } | FacetPlanKind::DistinctCount => {
                    FacetState::Ords(HashMap::new())
                }
                FacetPlanKind::NumericHistogram { size, .. } => FacetState::Buckets(vec![0; size]),
                FacetPlanKind::DateHistogram { .. } => FacetState::Dates(HashMap::new()),
                FacetPlanKind::Sum | FacetPlanKind::Avg => FacetState::Stats {
                    sum: 0.0,
                    values: 0,
                },
            })
            .collect();
        let mut values = Vec::with_capacity(self.facets.len());
        for (facet, &range) in self.facets.iter().zip(&ranges) {
            let needs_values = !matches!(
                facet.kind,
                FacetPlanKind::Terms { .. } | FacetPlanKind::DistinctCount
            );
            values.push(match &exact {
                Some(column) if needs_values && range.0 < range.1 => {
                    let prefix = typed_prefix(&facet.field, facet.field_type);
                    Some(
                        self.cache
                            .get_or_decode(reader.segment_id(), &prefix, column, range)?,
                    )
                }
                _ => None,
            });
        }
        Ok(FacetsSegment {
            exact,
            facets: self.facets.clone(),
            ranges,
            states,
            values,
            ords: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<FacetPartial>>) -> tantivy::Result<Vec<FacetPartial>> {
        let mut fruits = fruits.into_iter();
        let Some(mut merged) = fruits.next() else {
            return Ok(self.facets.iter().map(empty_partial).collect());
        };
        for fruit in fruits {
            for (into, from) in merged.iter_mut().zip(fruit) {
                into.merge(from);
            }
        }
        Ok(merged)
    }
}

/// A facet's partial when nothing matched.
pub(crate) fn empty_partial(facet: &FacetPlan) -> FacetPartial {
    match facet.kind {
        FacetPlanKind::Terms { .. } | FacetPlanKind::DistinctCount => {
            FacetPartial::Values(BTreeMap::new())
        }
        FacetPlanKind::NumericHistogram { size, .. } => FacetPartial::Buckets(vec![0; size]),
        FacetPlanKind::DateHistogram { .. } => FacetPartial::Dates(BTreeMap::new()),
        FacetPlanKind::Sum | FacetPlanKind::Avg => FacetPartial::Stats {
            sum: 0.0,
            values: 0,
        },
    }
}

/// The values of one field's ordinal range in one segment, by ordinal
/// minus the range's start.
type SegmentValues = Arc<Vec<Option<FieldValue>>>;

/// Decoded values per segment and field, kept across queries. Looking
/// values up by ordinal one at a time seeks into the dictionary for each;
/// segments never change, so one sequential pass per segment and field
/// serves every later facet over it. Entries of segments merged away are
/// dropped by [`ValueCache::retain`] after each commit.
#[derive(Default)]
pub(crate) struct ValueCache {
    values: Mutex<HashMap<(SegmentId, String), SegmentValues>>,
}

impl ValueCache {
    fn get_or_decode(
        &self,
        segment: SegmentId,
        prefix: &str,
        exact: &StrColumn,
        (start, end): (u64, u64),
    ) -> tantivy::Result<SegmentValues> {
        let key = (segment, prefix.to_string());
        if let Some(values) = self.lock().get(&key) {
            return Ok(values.clone());
        }
        // Decoded outside the lock; two queries may both decode, once.
        let name_len = prefix.len() - 1;
        let mut stream = exact.dictionary().range().ge(prefix).into_stream()?;
        let mut values = Vec::with_capacity((end - start) as usize);
        while stream.advance() && stream.term_ord() < end {
            let term = stream.key();
            values.push(if term.len() > name_len {
                decode_exact(&term[name_len..])
            } else {
                None
            });
        }
        let values = Arc::new(values);
        self.lock().insert(key, values.clone());
        Ok(values)
    }

    /// Forgets segments that are no longer live.
    pub(crate) fn retain(&self, live: &HashSet<SegmentId>) {
        self.lock().retain(|(segment, _), _| live.contains(segment));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(SegmentId, String), SegmentValues>> {
        // A panic elsewhere cannot leave the map half-updated: use it anyway.
        self.values
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl SegmentCollector for FacetsSegment {
    type Fruit = Vec<FacetPartial>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        let FacetsSegment {
            exact,
            facets,
            ranges,
            states,
            values,
            ords,
        } = self;
        let Some(exact) = exact.as_ref() else {
            return;
        };
        for (i, facet) in facets.iter().enumerate() {
            let (start, end) = ranges[i];
            if start == end {
                continue;
            }
            ords.clear();
            ords.extend(
                exact
                    .term_ords(doc)
                    .filter(|ord| (start..end).contains(ord)),
            );
            if ords.is_empty() {
                continue;
            }
            let decoded = values[i].as_deref();
            let value = |ord: u64| {
                decoded
                    .and_then(|values| values.get((ord - start) as usize))
                    .cloned()
                    .flatten()
            };
            match (&facet.kind, &mut states[i]) {
                (
                    FacetPlanKind::Terms { .. } | FacetPlanKind::DistinctCount,
                    FacetState::Ords(counts),
                ) => {
                    // An entry counts once per value, however often it holds it.
                    ords.sort_unstable();
                    ords.dedup();
                    for ord in ords.iter() {
                        *counts.entry(*ord).or_default() += 1;
                    }
                }
                (
                    FacetPlanKind::NumericHistogram { size, low, high },
                    FacetState::Buckets(counts),
                ) => {
                    let mut buckets: Vec<usize> = ords
                        .iter()
                        .filter_map(|&ord| match value(ord) {
                            Some(FieldValue::Number(n)) => histogram_bucket(n, *low, *high, *size),
                            _ => None,
                        })
                        .collect();
                    buckets.sort_unstable();
                    buckets.dedup();
                    for bucket in buckets {
                        counts[bucket] += 1;
                    }
                }
                (FacetPlanKind::DateHistogram { interval }, FacetState::Dates(counts)) => {
                    let mut starts: Vec<i64> = ords
                        .iter()
                        .filter_map(|&ord| match value(ord) {
                            Some(FieldValue::Date(d)) => {
                                Some(date_bucket(d, *interval).0.timestamp_micros())
                            }
                            _ => None,
                        })
                        .collect();
                    starts.sort_unstable();
                    starts.dedup();
                    for start in starts {
                        *counts.entry(start).or_default() += 1;
                    }
                }
                (FacetPlanKind::Sum | FacetPlanKind::Avg, FacetState::Stats { sum, values }) => {
                    for &ord in ords.iter() {
                        if let Some(FieldValue::Number(n)) = value(ord) {
                            *sum += n;
                            *values += 1;
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn harvest(self) -> Vec<FacetPartial> {
        let mut buffer = Vec::new();
        self.states
            .into_iter()
            .zip(&self.facets)
            .map(|(state, facet)| match state {
                FacetState::Ords(counts) => {
                    let name_len = facet.field.len() + 1;
                    let mut values = BTreeMap::new();
                    if let Some(exact) = &self.exact {
                        for (ord, count) in counts {
                            buffer.clear();
                            if let Ok(true) = exact.dictionary().ord_to_term(ord, &mut buffer) {
                                if buffer.len() > name_len {
                                    values.insert(buffer[name_len..].to_vec(), count);
                                }
                            }
                        }
                    }
                    FacetPartial::Values(values)
                }
                FacetState::Buckets(counts) => FacetPartial::Buckets(counts),
                FacetState::Dates(counts) => FacetPartial::Dates(counts.into_iter().collect()),
                FacetState::Stats { sum, values } => FacetPartial::Stats { sum, values },
            })
            .collect()
    }
}
