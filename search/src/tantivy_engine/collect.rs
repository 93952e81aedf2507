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
    sort: SortOrds,
    key: u64,
}

/// How many sort fields a row keeps inline (without an allocation per hit).
const INLINE_SORTS: usize = 2;

/// A row's sort ordinals, one per sort field.
enum SortOrds {
    Inline([Option<u64>; INLINE_SORTS], usize),
    Heap(Vec<Option<u64>>),
}

impl SortOrds {
    fn new(ords: impl ExactSizeIterator<Item = Option<u64>>) -> Self {
        if ords.len() <= INLINE_SORTS {
            let mut inline = [None; INLINE_SORTS];
            let mut len = 0;
            for (slot, ord) in inline.iter_mut().zip(ords) {
                *slot = ord;
                len += 1;
            }
            SortOrds::Inline(inline, len)
        } else {
            SortOrds::Heap(ords.collect())
        }
    }

    fn as_slice(&self) -> &[Option<u64>] {
        match self {
            SortOrds::Inline(inline, len) => &inline[..*len],
            SortOrds::Heap(ords) => ords,
        }
    }
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
        cmp_sort(a.sort.as_slice(), b.sort.as_slice(), &self.descending)
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
        let exact = self.exact.as_ref();
        let sort = SortOrds::new(self.ranges.iter().zip(&self.descending).map(
            |(&(start, end), &desc)| {
                let values = exact?
                    .term_ords(doc)
                    .filter(|ord| (start..end).contains(ord));
                if desc {
                    values.max()
                } else {
                    values.min()
                }
            },
        ));
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
        let keys = terms_of(&self.key, rows.iter().map(|row| Some(row.key)));
        let mut sorts: Vec<Vec<Option<Vec<u8>>>> = rows.iter().map(|_| Vec::new()).collect();
        for i in 0..self.ranges.len() {
            let values = match &self.exact {
                Some(exact) => terms_of(exact, rows.iter().map(|row| row.sort.as_slice()[i])),
                None => vec![None; rows.len()],
            };
            for (sort, value) in sorts.iter_mut().zip(values) {
                sort.push(value);
            }
        }
        let hits = rows
            .into_iter()
            .zip(keys)
            .zip(sorts)
            .map(|((row, key), sort)| Hit {
                score: row.score,
                sort,
                key: key.unwrap_or_default(),
                address: DocAddress::new(self.segment, row.doc),
            })
            .collect();
        (total, hits)
    }
}

/// The terms of some ordinals of a column, in the order given. Looked up
/// in ordinal order, so that the dictionary is read in one pass rather
/// than searched once per ordinal.
fn terms_of(column: &StrColumn, ords: impl Iterator<Item = Option<u64>>) -> Vec<Option<Vec<u8>>> {
    let ords: Vec<Option<u64>> = ords.collect();
    let mut order: Vec<(u64, usize)> = ords
        .iter()
        .enumerate()
        .filter_map(|(at, ord)| ord.map(|ord| (ord, at)))
        .collect();
    order.sort_unstable();
    let sorted: Vec<u64> = order.iter().map(|&(ord, _)| ord).collect();
    let mut terms = vec![None; ords.len()];
    let mut next = order.iter();
    let found = column.dictionary().sorted_ords_to_term_cb(&sorted, |term| {
        if let Some(&(_, at)) = next.next() {
            terms[at] = Some(term.to_vec());
        }
    });
    if !matches!(found, Ok(true)) {
        // As before: a term that cannot be read is an empty one.
        for (term, ord) in terms.iter_mut().zip(&ords) {
            if ord.is_some() && term.is_none() {
                *term = Some(Vec::new());
            }
        }
    }
    terms
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
    /// Terms and distinct counts: entries per ordinal (minus the range's start).
    Ords(OrdCounts),
    /// Histograms: entries per bucket, and which ordinals fall in which
    /// bucket (see [`Runs`]).
    Buckets(Runs),
    Stats {
        sum: f64,
        values: u64,
    },
}

/// Ordinals over this many are counted in a map rather than an array:
/// an array costs its size per segment and query, whatever the matches.
const MAX_DENSE_ORDS: u64 = 1 << 16;

/// Entries per ordinal (minus the range's start).
enum OrdCounts {
    Dense(Vec<u32>),
    Sparse(HashMap<u64, u32>),
}

impl OrdCounts {
    fn new(ords: u64) -> Self {
        if ords <= MAX_DENSE_ORDS {
            OrdCounts::Dense(vec![0; ords as usize])
        } else {
            OrdCounts::Sparse(HashMap::new())
        }
    }

    fn add(&mut self, at: u64) {
        match self {
            OrdCounts::Dense(counts) => counts[at as usize] += 1,
            OrdCounts::Sparse(counts) => *counts.entry(at).or_default() += 1,
        }
    }

    /// The ordinals counted, in order, with their counts.
    fn held(self) -> Vec<(u64, u32)> {
        match self {
            OrdCounts::Dense(counts) => counts
                .into_iter()
                .enumerate()
                .filter(|&(_, count)| count > 0)
                .map(|(at, count)| (at as u64, count))
                .collect(),
            OrdCounts::Sparse(counts) => {
                let mut held: Vec<(u64, u32)> = counts.into_iter().collect();
                held.sort_unstable();
                held
            }
        }
    }
}

/// A histogram's buckets in one segment, found as hits need them. Term
/// order is value order and a bucket is a value interval, so the ordinals
/// of one bucket are one run: a hit's bucket is a lookup among the runs
/// found so far, and only a hit outside all of them computes a bucket
/// (and finds its run by bisecting the segment's decoded values).
struct Runs {
    /// First ordinal (minus the range's start) of each run found: its end
    /// and its slot in `keys` / `counts` (`None`: no bucket, out of range).
    runs: BTreeMap<u64, (u64, Option<usize>)>,
    /// Bucket of each slot: the histogram's index, or a date bucket's start.
    keys: Vec<i64>,
    counts: Vec<u64>,
}

impl Runs {
    fn new() -> Self {
        Self {
            runs: BTreeMap::new(),
            keys: Vec::new(),
            counts: Vec::new(),
        }
    }

    /// The slot of the bucket of ordinal `at` (minus the range's start).
    fn slot(
        &mut self,
        at: u64,
        values: &[Option<FieldValue>],
        kind: &FacetPlanKind,
    ) -> Option<usize> {
        if let Some((_, &(end, slot))) = self.runs.range(..=at).next_back() {
            if at < end {
                return slot;
            }
        }
        // The rank orders every value (out-of-range numbers below and above
        // the buckets) and is the same for all values of one bucket.
        let rank = |value: &Option<FieldValue>| -> Option<(i8, i64)> {
            match (kind, value) {
                (
                    FacetPlanKind::NumericHistogram { size, low, high },
                    Some(FieldValue::Number(n)),
                ) => Some(match histogram_bucket(*n, *low, *high, *size) {
                    Some(bucket) => (0, bucket as i64),
                    None if *n < *low => (-1, 0),
                    None => (1, 0),
                }),
                (FacetPlanKind::DateHistogram { interval }, Some(FieldValue::Date(d))) => {
                    Some((0, date_bucket(*d, *interval).0.timestamp_micros()))
                }
                _ => None,
            }
        };
        let value = values.get(at as usize)?;
        // A value that does not decode (never written so) has no bucket.
        let rank_here = rank(value)?;
        let first = values.partition_point(|v| rank(v).is_some_and(|r| r < rank_here)) as u64;
        let end = values.partition_point(|v| rank(v).is_some_and(|r| r <= rank_here)) as u64;
        let slot = match rank_here {
            (0, key) => {
                self.keys.push(key);
                self.counts.push(0);
                Some(self.keys.len() - 1)
            }
            _ => None,
        };
        // Bisection assumed the ranks sorted; make sure `at` is in the run
        // found before caching it.
        if (first..end).contains(&at) {
            self.runs.insert(first, (end, slot));
        }
        slot
    }
}

pub(crate) struct FacetsSegment {
    exact: Option<StrColumn>,
    facets: Vec<FacetPlan>,
    ranges: Vec<(u64, u64)>,
    states: Vec<FacetState>,
    /// Decoded values of each facet's range, for the facets that need them.
    values: Vec<Option<SegmentValues>>,
    /// The current document's `exact` ordinals, sorted.
    ords: Vec<u64>,
    slots: Vec<usize>,
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
        let ranges: Vec<(u64, u64)> = match &exact {
            Some(column) => self
                .facets
                .iter()
                .map(|facet| ordinal_range(column, &typed_prefix(&facet.field, facet.field_type)))
                .collect::<tantivy::Result<_>>()?,
            None => vec![(0, 0); self.facets.len()],
        };
        let states =
            self.facets
                .iter()
                .zip(&ranges)
                .map(|(facet, &(start, end))| match facet.kind {
                    FacetPlanKind::Terms { .. } | FacetPlanKind::DistinctCount => {
                        FacetState::Ords(OrdCounts::new(end - start))
                    }
                    FacetPlanKind::NumericHistogram { .. }
                    | FacetPlanKind::DateHistogram { .. } => FacetState::Buckets(Runs::new()),
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
            slots: Vec::new(),
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
            slots,
        } = self;
        let Some(exact) = exact.as_ref() else {
            return;
        };
        // One read of the document's values serves every facet: each
        // facet's values are the slice of its ordinal range.
        ords.clear();
        ords.extend(exact.term_ords(doc));
        ords.sort_unstable();
        for (i, facet) in facets.iter().enumerate() {
            let (start, end) = ranges[i];
            let from = ords.partition_point(|&ord| ord < start);
            let to = from + ords[from..].partition_point(|&ord| ord < end);
            if from == to {
                continue;
            }
            let mine = &ords[from..to];
            match &mut states[i] {
                FacetState::Ords(counts) => {
                    // An entry counts once per value, however often it holds it.
                    let mut previous = None;
                    for &ord in mine {
                        if previous != Some(ord) {
                            counts.add(ord - start);
                            previous = Some(ord);
                        }
                    }
                }
                FacetState::Buckets(runs) => {
                    let Some(decoded) = values[i].as_deref() else {
                        continue;
                    };
                    slots.clear();
                    slots.extend(
                        mine.iter()
                            .filter_map(|&ord| runs.slot(ord - start, decoded, &facet.kind)),
                    );
                    slots.sort_unstable();
                    slots.dedup();
                    for &slot in slots.iter() {
                        runs.counts[slot] += 1;
                    }
                }
                // Sum and avg take every value, repeated ones too.
                FacetState::Stats { sum, values: count } => {
                    let Some(decoded) = values[i].as_deref() else {
                        continue;
                    };
                    for &ord in mine {
                        if let Some(Some(FieldValue::Number(n))) =
                            decoded.get((ord - start) as usize)
                        {
                            *sum += n;
                            *count += 1;
                        }
                    }
                }
            }
        }
    }

    fn harvest(self) -> Vec<FacetPartial> {
        self.states
            .into_iter()
            .zip(&self.facets)
            .zip(&self.ranges)
            .map(|((state, facet), &(start, _))| match (state, &facet.kind) {
                (FacetState::Ords(counts), _) => {
                    let name_len = facet.field.len() + 1;
                    let mut values = BTreeMap::new();
                    let held = counts.held();
                    let ords: Vec<u64> = held.iter().map(|&(at, _)| start + at).collect();
                    if let Some(exact) = &self.exact {
                        // Ordinals in order: one pass over the dictionary.
                        let mut counts_of = held.iter().map(|&(_, count)| count);
                        let _ = exact.dictionary().sorted_ords_to_term_cb(&ords, |term| {
                            let count = counts_of.next().unwrap_or(0);
                            if term.len() > name_len {
                                values.insert(term[name_len..].to_vec(), u64::from(count));
                            }
                        });
                    }
                    FacetPartial::Values(values)
                }
                (FacetState::Buckets(runs), FacetPlanKind::NumericHistogram { size, .. }) => {
                    let mut counts = vec![0; *size];
                    for (key, count) in runs.keys.iter().zip(runs.counts) {
                        counts[*key as usize] += count;
                    }
                    FacetPartial::Buckets(counts)
                }
                (FacetState::Buckets(runs), _) => {
                    let mut dates = BTreeMap::new();
                    for (key, count) in runs.keys.iter().zip(runs.counts) {
                        if count > 0 {
                            *dates.entry(*key).or_default() += count;
                        }
                    }
                    FacetPartial::Dates(dates)
                }
                (FacetState::Stats { sum, values }, _) => FacetPartial::Stats { sum, values },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_sparse_ordinal_counts_agree() {
        let adds = [5, 3, 5, 0, 9, 3, 5];
        let mut dense = OrdCounts::new(10);
        let mut sparse = OrdCounts::new(MAX_DENSE_ORDS + 1);
        assert!(matches!(dense, OrdCounts::Dense(_)));
        assert!(matches!(sparse, OrdCounts::Sparse(_)));
        for at in adds {
            dense.add(at);
            sparse.add(at);
        }
        let expected = vec![(0, 1), (3, 2), (5, 3), (9, 1)];
        assert_eq!(dense.held(), expected);
        assert_eq!(sparse.held(), expected);
    }
}
