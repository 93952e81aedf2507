//! The embedded search engine: one tantivy index per search index, on
//! local disk under one directory (`DIR/<index id>/`), with the index's
//! field map beside it in `fields.json`.
//!
//! This module owns the on-disk layout, the tantivy schema and how requests
//! planned by [`plan`](crate::plan) run on tantivy. It must not decide what
//! a request means (that is `plan`, shared with the PostgreSQL engine), and
//! it does all tantivy work on blocking threads (`spawn_blocking`), never
//! on the async runtime's.
//!
//! Cost and lifetime: a [`TantivyEngine`] is opened once per process and
//! shared; each open index keeps one `IndexWriter` (and its memory budget)
//! and one reader. Every ingest or delete call is one tantivy commit, so
//! its effects are durable and visible when the call returns.

mod collect;
mod compile;
mod doc;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write as _;
use std::ops::Bound as Edge;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use lattice_protocol::search::{
    Bucket, DeleteTarget, Entry, FacetResult, FieldType, ResultEntry, ScrollRequest, ScrollResult,
    SearchRequest, SearchResult, SubjectResult, MAX_ENTRIES_PER_SUBJECT,
};
use lattice_protocol::SearchIndexId;
use serde_json::Value;
use tantivy::collector::Count;
use tantivy::query::{BooleanQuery, InvertedIndexRangeQuery, Occur, Query, TermQuery};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use self::collect::{FacetPartial, FacetsCollector, Hit, HitsCollector, ValueCache};
use self::compile::{engine, Compiler};
use self::doc::{decode_exact, Fields, PREFIX_END};
use crate::plan::{
    check_entry, date_bucket, format_date, group_by_subject, histogram_bound, number_value,
    plan_query, plan_scroll, plan_search, Cond, EntryKey, FacetPlan, FacetPlanKind,
};
use crate::schema::{flatten, FieldValue};
use crate::{EntryOutcome, Limits, SearchEngine, SearchError, Visibility};

/// Memory one index's writer may use before it flushes a segment. Large,
/// so that a big ingest call becomes few segments (the arena grows as
/// needed; it is not reserved up front).
const WRITER_MEMORY: usize = 256 * 1024 * 1024;

const FIELDS_FILE: &str = "fields.json";

impl From<tantivy::TantivyError> for SearchError {
    fn from(err: tantivy::TantivyError) -> Self {
        SearchError::Engine(err.to_string())
    }
}

/// The embedded engine. See the module documentation.
pub struct TantivyEngine {
    root: PathBuf,
    indexes: RwLock<HashMap<SearchIndexId, Arc<IndexHandle>>>,
    /// Serializes index creation (two creators of one id would race on disk).
    creating: tokio::sync::Mutex<()>,
}

impl TantivyEngine {
    /// Opens (creating it if need be) the engine's directory and every index
    /// in it. Blocking: call it at start-up or from a blocking thread.
    pub fn open(dir: PathBuf) -> Result<Self, SearchError> {
        fs::create_dir_all(&dir).map_err(engine)?;
        let mut indexes = HashMap::new();
        for item in fs::read_dir(&dir).map_err(engine)? {
            let item = item.map_err(engine)?;
            let Some(id) = item
                .file_name()
                .to_str()
                .and_then(|name| name.parse::<SearchIndexId>().ok())
            else {
                continue;
            };
            let handle = IndexHandle::open(&item.path())?;
            indexes.insert(id, Arc::new(handle));
        }
        tracing::info!(dir = %dir.display(), indexes = indexes.len(), "tantivy search engine open");
        Ok(Self {
            root: dir,
            indexes: RwLock::new(indexes),
            creating: tokio::sync::Mutex::new(()),
        })
    }

    fn handle(&self, index: SearchIndexId) -> Result<Arc<IndexHandle>, SearchError> {
        self.indexes
            .read()
            .map_err(engine)?
            .get(&index)
            .cloned()
            .ok_or(SearchError::UnknownIndex(index))
    }

    /// Runs `work` on index `index` on a blocking thread.
    async fn with_index<T: Send + 'static>(
        &self,
        index: SearchIndexId,
        work: impl FnOnce(&IndexHandle) -> Result<T, SearchError> + Send + 'static,
    ) -> Result<T, SearchError> {
        let handle = self.handle(index)?;
        blocking(move || work(&handle)).await
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, SearchError> + Send + 'static,
) -> Result<T, SearchError> {
    tokio::task::spawn_blocking(work).await.map_err(engine)?
}

#[async_trait]
impl SearchEngine for TantivyEngine {
    fn name(&self) -> &'static str {
        "tantivy"
    }

    async fn create_index(&self, index: SearchIndexId) -> Result<(), SearchError> {
        let _creating = self.creating.lock().await;
        if self.handle(index).is_ok() {
            return Ok(());
        }
        let path = self.root.join(index.to_string());
        let handle = blocking(move || IndexHandle::create(&path)).await?;
        self.indexes
            .write()
            .map_err(engine)?
            .insert(index, Arc::new(handle));
        Ok(())
    }

    async fn drop_index(&self, index: SearchIndexId) -> Result<(), SearchError> {
        let handle = self
            .indexes
            .write()
            .map_err(engine)?
            .remove(&index)
            .ok_or(SearchError::UnknownIndex(index))?;
        let path = self.root.join(index.to_string());
        let doomed = self.root.join(format!(".dropped-{index}"));
        blocking(move || {
            if let Some(writer) = handle.writer.lock().map_err(engine)?.take() {
                writer.wait_merging_threads()?;
            }
            // Renaming first makes the drop atomic for the next `open`.
            fs::rename(&path, &doomed).map_err(engine)?;
            fs::remove_dir_all(&doomed).map_err(engine)
        })
        .await
    }

    async fn fields(
        &self,
        index: SearchIndexId,
    ) -> Result<BTreeMap<String, FieldType>, SearchError> {
        let handle = self.handle(index)?;
        let fields = handle.fields.read().map_err(engine)?.clone();
        Ok(fields)
    }

    async fn count(&self, index: SearchIndexId) -> Result<u64, SearchError> {
        let handle = self.handle(index)?;
        Ok(handle.reader.searcher().num_docs())
    }

    async fn ingest(
        &self,
        index: SearchIndexId,
        entries: Vec<Entry>,
        limits: &Limits,
    ) -> Result<Vec<EntryOutcome>, SearchError> {
        let limits = limits.clone();
        self.with_index(index, move |handle| handle.ingest(entries, &limits))
            .await
    }

    async fn delete(
        &self,
        index: SearchIndexId,
        target: &DeleteTarget,
    ) -> Result<u64, SearchError> {
        let target = target.clone();
        self.with_index(index, move |handle| handle.delete(&target))
            .await
    }

    async fn search(
        &self,
        index: SearchIndexId,
        request: &SearchRequest,
        visibility: &Visibility,
    ) -> Result<SearchResult, SearchError> {
        let (request, visibility) = (request.clone(), visibility.clone());
        self.with_index(index, move |handle| handle.search(&request, &visibility))
            .await
    }

    async fn scroll(
        &self,
        index: SearchIndexId,
        request: &ScrollRequest,
        visibility: &Visibility,
    ) -> Result<ScrollResult, SearchError> {
        let (request, visibility) = (request.clone(), visibility.clone());
        self.with_index(index, move |handle| handle.scroll(&request, &visibility))
            .await
    }

    async fn subject(
        &self,
        index: SearchIndexId,
        subject: &str,
        visibility: &Visibility,
    ) -> Result<Option<SubjectResult>, SearchError> {
        let (subject, visibility) = (subject.to_string(), visibility.clone());
        self.with_index(index, move |handle| handle.subject(&subject, &visibility))
            .await
    }
}

/// One open index.
struct IndexHandle {
    dir: PathBuf,
    reader: IndexReader,
    /// `None` once the index is dropped. Writes to one index come one call
    /// at a time (the service orders them), so the lock is not contended.
    writer: Mutex<Option<IndexWriter>>,
    fields: RwLock<BTreeMap<String, FieldType>>,
    tantivy_fields: Fields,
    /// Facet values decoded per segment (see [`ValueCache`]).
    values: Arc<ValueCache>,
}

impl IndexHandle {
    fn create(dir: &Path) -> Result<Self, SearchError> {
        fs::create_dir_all(dir).map_err(engine)?;
        if dir.join("meta.json").exists() {
            return Self::open(dir);
        }
        let (schema, _) = doc::schema();
        let index = Index::create_in_dir(dir, schema)?;
        Self::with_index(dir, index, BTreeMap::new())
    }

    fn open(dir: &Path) -> Result<Self, SearchError> {
        let index = Index::open_in_dir(dir)?;
        let fields = match fs::read(dir.join(FIELDS_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(engine)?,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(err) => return Err(engine(err)),
        };
        Self::with_index(dir, index, fields)
    }

    fn with_index(
        dir: &Path,
        index: Index,
        fields: BTreeMap<String, FieldType>,
    ) -> Result<Self, SearchError> {
        let tantivy_fields = doc::fields_of(&index.schema())?;
        // Tokenizers are not stored with the index: register them on every open.
        index
            .tokenizers()
            .register(doc::WORDS, doc::WordsTokenizer::new(false));
        index
            .tokenizers()
            .register(doc::FIELDED_WORDS, doc::WordsTokenizer::new(true));
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        // One indexing thread fewer than the cores: the thread preparing
        // documents (flattening, checks) needs one too.
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .clamp(1, 4);
        let writer = index.writer_with_num_threads(threads, WRITER_MEMORY)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            reader,
            writer: Mutex::new(Some(writer)),
            fields: RwLock::new(fields),
            tantivy_fields,
            values: Arc::default(),
        })
    }

    fn field_map(&self) -> Result<BTreeMap<String, FieldType>, SearchError> {
        Ok(self.fields.read().map_err(engine)?.clone())
    }

    /// Writes the field map atomically (a temporary file, then a rename).
    fn save_fields(&self, fields: &BTreeMap<String, FieldType>) -> Result<(), SearchError> {
        let temporary = self.dir.join(format!("{FIELDS_FILE}.tmp"));
        let mut file = fs::File::create(&temporary).map_err(engine)?;
        file.write_all(&serde_json::to_vec_pretty(fields).map_err(engine)?)
            .map_err(engine)?;
        file.sync_all().map_err(engine)?;
        fs::rename(&temporary, self.dir.join(FIELDS_FILE)).map_err(engine)
    }

    fn commit(&self, writer: &mut IndexWriter) -> Result<(), SearchError> {
        writer.commit()?;
        self.reader.reload()?;
        let live = self
            .reader
            .searcher()
            .segment_readers()
            .iter()
            .map(|segment| segment.segment_id())
            .collect();
        self.values.retain(&live);
        Ok(())
    }

    /// Runs one write call with the writer. If it fails, whatever it added
    /// or deleted is rolled back, so that the next call does not commit it.
    fn write<T>(
        &self,
        work: impl FnOnce(&mut IndexWriter) -> Result<T, SearchError>,
    ) -> Result<T, SearchError> {
        let mut guard = self.writer.lock().map_err(engine)?;
        let writer = guard
            .as_mut()
            .ok_or_else(|| SearchError::Engine("the index was dropped".into()))?;
        let result = work(writer);
        if result.is_err() {
            if let Err(err) = writer.rollback() {
                tracing::error!(error = %err, dir = %self.dir.display(), "tantivy rollback failed");
            }
        }
        result
    }

    fn ingest(
        &self,
        entries: Vec<Entry>,
        limits: &Limits,
    ) -> Result<Vec<EntryOutcome>, SearchError> {
        self.write(|writer| self.ingest_with(writer, entries, limits))
    }

    fn ingest_with(
        &self,
        writer: &mut IndexWriter,
        entries: Vec<Entry>,
        limits: &Limits,
    ) -> Result<Vec<EntryOutcome>, SearchError> {
        let mut fields = self.field_map()?;
        let known = fields.len();
        let searcher = self.reader.searcher();
        // Entry ids per subject: what the index holds, plus this call's.
        let mut subjects: HashMap<String, BTreeSet<Option<String>>> = HashMap::new();
        let mut outcomes = Vec::with_capacity(entries.len());
        let started = std::time::Instant::now();
        for entry in entries {
            let prepared = self.prepare(&entry, &fields, limits, &searcher, &mut subjects);
            let (document, added) = match prepared {
                Ok(prepared) => prepared,
                Err(reason) => {
                    outcomes.push(EntryOutcome::Rejected(reason));
                    continue;
                }
            };
            fields.extend(added);
            let key = EntryKey::new(&entry.subject, entry.id.as_deref()).encode();
            writer.delete_term(Term::from_field_text(self.tantivy_fields.key, &key));
            writer.add_document(document)?;
            outcomes.push(EntryOutcome::Applied);
        }
        // Fields are saved before the commit: a crash in between leaves a
        // field with no values, which is harmless; the other order could
        // leave values of a field the map does not know.
        if fields.len() != known {
            self.save_fields(&fields)?;
        }
        let prepared = started.elapsed();
        self.commit(writer)?;
        tracing::debug!(
            entries = outcomes.len(),
            prepare_ms = prepared.as_millis() as u64,
            commit_ms = (started.elapsed() - prepared).as_millis() as u64,
            "tantivy ingest committed"
        );
        *self.fields.write().map_err(engine)? = fields;
        Ok(outcomes)
    }

    /// Checks one entry and builds its document, or says why it is rejected.
    fn prepare(
        &self,
        entry: &Entry,
        fields: &BTreeMap<String, FieldType>,
        limits: &Limits,
        searcher: &Searcher,
        subjects: &mut HashMap<String, BTreeSet<Option<String>>>,
    ) -> Result<(TantivyDocument, Vec<(String, FieldType)>), String> {
        let principals = check_entry(entry, limits)?;
        let (flat, added) = flatten(&entry.content, fields, limits)?;
        if !subjects.contains_key(&entry.subject) {
            let ids = self
                .entry_ids(searcher, &entry.subject)
                .map_err(|err| format!("could not read the subject's entries: {err}"))?;
            subjects.insert(entry.subject.clone(), ids);
        }
        let ids = subjects.get_mut(&entry.subject).expect("inserted above");
        if !ids.contains(&entry.id) && ids.len() >= MAX_ENTRIES_PER_SUBJECT {
            return Err(format!(
                "subject `{}` already holds {MAX_ENTRIES_PER_SUBJECT} entries, the most one subject may hold",
                entry.subject
            ));
        }
        ids.insert(entry.id.clone());
        Ok((
            doc::build(&self.tantivy_fields, entry, &principals, &flat),
            added,
        ))
    }

    /// Matches every entry of a subject: keys from `subject NUL` on.
    fn subject_query(&self, subject: &str) -> InvertedIndexRangeQuery {
        let start = EntryKey::new(subject, None).encode();
        let end = format!("{start}{PREFIX_END}");
        InvertedIndexRangeQuery::new(
            Edge::Included(Term::from_field_text(self.tantivy_fields.key, &start)),
            Edge::Excluded(Term::from_field_text(self.tantivy_fields.key, &end)),
        )
    }

    /// Whether any segment's key dictionary has a term of the subject
    /// (deleted entries included): when none does, the subject is new.
    fn subject_may_exist(&self, searcher: &Searcher, subject: &str) -> Result<bool, SearchError> {
        let start = EntryKey::new(subject, None).encode();
        let end = format!("{start}{PREFIX_END}");
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.tantivy_fields.key)?;
            let mut terms = inverted
                .terms()
                .range()
                .ge(start.as_bytes())
                .lt(end.as_bytes())
                .into_stream()
                .map_err(engine)?;
            if terms.advance() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The entry ids a subject holds in the committed index.
    fn entry_ids(
        &self,
        searcher: &Searcher,
        subject: &str,
    ) -> Result<BTreeSet<Option<String>>, SearchError> {
        // Most ingested subjects are new: a dictionary lookup answers those
        // without running a query.
        if !self.subject_may_exist(searcher, subject)? {
            return Ok(BTreeSet::new());
        }
        let query = self.subject_query(subject);
        let (_, hits) = searcher.search(&query, &HitsCollector::by_key(usize::MAX))?;
        Ok(hits
            .iter()
            .filter_map(|hit| {
                std::str::from_utf8(&hit.key)
                    .ok()
                    .and_then(EntryKey::decode)
            })
            .map(|key| key.entry_id)
            .collect())
    }

    fn delete(&self, target: &DeleteTarget) -> Result<u64, SearchError> {
        self.write(|writer| self.delete_with(writer, target))
    }

    fn delete_with(
        &self,
        writer: &mut IndexWriter,
        target: &DeleteTarget,
    ) -> Result<u64, SearchError> {
        let searcher = self.reader.searcher();
        let term_query = |term: Term| TermQuery::new(term, IndexRecordOption::Basic);
        let mut removed = 0;
        match target {
            DeleteTarget::Subjects { subjects } => {
                let unique: BTreeSet<&String> = subjects.iter().collect();
                for subject in unique {
                    let query = self.subject_query(subject);
                    removed += searcher.search(&query, &Count)? as u64;
                    writer.delete_query(Box::new(query))?;
                }
            }
            DeleteTarget::Entry { subject, entry_id } => {
                let key = EntryKey::new(subject, entry_id.as_deref()).encode();
                let term = Term::from_field_text(self.tantivy_fields.key, &key);
                removed = searcher.search(&term_query(term.clone()), &Count)? as u64;
                writer.delete_term(term);
            }
            DeleteTarget::Query { query } => {
                let fields = self.field_map()?;
                let cond = plan_query(query, &fields)?;
                let compiled = self
                    .compiler(&searcher, &fields, &[])
                    .visible(&cond, &Visibility::Bypass)?;
                let (total, hits) =
                    searcher.search(&*compiled, &HitsCollector::by_key(usize::MAX))?;
                for hit in hits {
                    let key = String::from_utf8(hit.key).map_err(engine)?;
                    writer.delete_term(Term::from_field_text(self.tantivy_fields.key, &key));
                }
                removed = total;
            }
        }
        if removed > 0 {
            self.commit(writer)?;
        }
        Ok(removed)
    }

    fn compiler<'a>(
        &'a self,
        searcher: &'a Searcher,
        fields: &'a BTreeMap<String, FieldType>,
        boosts: &[(String, f64)],
    ) -> Compiler<'a> {
        Compiler {
            fields: &self.tantivy_fields,
            searcher,
            types: fields,
            boosts: boosts
                .iter()
                .map(|(name, factor)| (name.clone(), *factor as f32))
                .collect(),
        }
    }

    fn search(
        &self,
        request: &SearchRequest,
        visibility: &Visibility,
    ) -> Result<SearchResult, SearchError> {
        let fields = self.field_map()?;
        let plan = plan_search(request, &fields)?;
        let searcher = self.reader.searcher();
        let compiler = self.compiler(&searcher, &fields, &plan.boosts);
        let matching = compiler.visible(&plan.matching, visibility)?;
        let facet_results = if plan.facets.is_empty() {
            Vec::new()
        } else {
            let partials = searcher.search(
                &*matching,
                &FacetsCollector::new(&plan.facets, self.values.clone()),
            )?;
            shape_facets(&plan.facets, partials)
        };
        // Post-facet filters narrow the hits, not the facet counts above.
        let hits_query: Box<dyn Query> = if plan.post_filter == Cond::All {
            matching
        } else {
            Box::new(BooleanQuery::new(vec![
                (Occur::Must, matching),
                (Occur::Must, compiler.compile(&plan.post_filter)?),
            ]))
        };
        let window = plan.offset + plan.limit;
        let (total, hits) =
            searcher.search(&*hits_query, &HitsCollector::new(&plan.sort, window))?;
        let page: Vec<Hit> = hits.into_iter().skip(plan.offset).collect();
        let entries = self.load(&searcher, &page)?;
        let count = entries.len();
        Ok(SearchResult {
            total,
            count: count as u64,
            offset: plan.offset,
            has_next_page: ((plan.offset + count) as u64) < total,
            gmeta: group_by_subject(entries),
            facet_results,
        })
    }

    fn scroll(
        &self,
        request: &ScrollRequest,
        visibility: &Visibility,
    ) -> Result<ScrollResult, SearchError> {
        let fields = self.field_map()?;
        let plan = plan_scroll(request, &fields)?;
        let searcher = self.reader.searcher();
        let query = self
            .compiler(&searcher, &fields, &[])
            .visible(&plan.matching, visibility)?;
        let collector =
            HitsCollector::by_key(plan.limit + 1).after(plan.after.as_ref().map(EntryKey::encode));
        let (_, mut hits) = searcher.search(&*query, &collector)?;
        let has_next_page = hits.len() > plan.limit;
        hits.truncate(plan.limit);
        let marker = match hits.last() {
            Some(last) if has_next_page => std::str::from_utf8(&last.key)
                .ok()
                .and_then(EntryKey::decode)
                .map(|key| key.marker()),
            _ => None,
        };
        let entries = self.load(&searcher, &hits)?;
        Ok(ScrollResult {
            count: entries.len() as u64,
            has_next_page,
            marker,
            gmeta: group_by_subject(entries),
        })
    }

    fn subject(
        &self,
        subject: &str,
        visibility: &Visibility,
    ) -> Result<Option<SubjectResult>, SearchError> {
        let searcher = self.reader.searcher();
        let fields = self.field_map()?;
        let compiler = self.compiler(&searcher, &fields, &[]);
        let query = BooleanQuery::new(vec![
            (
                Occur::Must,
                Box::new(self.subject_query(subject)) as Box<dyn Query>,
            ),
            (Occur::Must, compiler.visible(&Cond::All, visibility)?),
        ]);
        let (_, hits) = searcher.search(&query, &HitsCollector::by_key(usize::MAX))?;
        let entries = self.load(&searcher, &hits)?;
        Ok(group_by_subject(entries).into_iter().next())
    }

    /// The stored entries of hits, in order.
    fn load(
        &self,
        searcher: &Searcher,
        hits: &[Hit],
    ) -> Result<Vec<(String, ResultEntry)>, SearchError> {
        hits.iter()
            .map(|hit| {
                let document: TantivyDocument = searcher.doc(hit.address)?;
                let source = document
                    .get_first(self.tantivy_fields.source)
                    .and_then(|value| value.as_str())
                    .ok_or_else(|| SearchError::Engine("a document without its source".into()))?;
                let entry: Entry = serde_json::from_str(source).map_err(engine)?;
                Ok((
                    entry.subject,
                    ResultEntry {
                        entry_id: entry.id,
                        content: entry.content,
                        visible_to: Some(entry.visible_to),
                    },
                ))
            })
            .collect()
    }
}

/// Facet results from their merged partials.
fn shape_facets(plans: &[FacetPlan], partials: Vec<FacetPartial>) -> Vec<FacetResult> {
    plans
        .iter()
        .zip(partials)
        .map(|(plan, partial)| {
            let (buckets, value) = match (&plan.kind, partial) {
                (FacetPlanKind::Terms { size }, FacetPartial::Values(counts)) => {
                    let mut counts: Vec<(Vec<u8>, u64)> = counts.into_iter().collect();
                    // Largest count first; ties in value order (term order is value order).
                    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    let buckets = counts
                        .into_iter()
                        .take(*size)
                        .filter_map(|(value, count)| {
                            Some(Bucket {
                                value: json_value(decode_exact(&value)?),
                                to: None,
                                count,
                            })
                        })
                        .collect();
                    (Some(buckets), None)
                }
                (FacetPlanKind::DistinctCount, FacetPartial::Values(counts)) => {
                    (None, Some(Value::from(counts.len() as u64)))
                }
                (
                    FacetPlanKind::NumericHistogram { size, low, high },
                    FacetPartial::Buckets(counts),
                ) => {
                    let buckets = counts
                        .into_iter()
                        .enumerate()
                        .map(|(i, count)| Bucket {
                            value: number_value(histogram_bound(i, *low, *high, *size)),
                            to: Some(number_value(histogram_bound(i + 1, *low, *high, *size))),
                            count,
                        })
                        .collect();
                    (Some(buckets), None)
                }
                (FacetPlanKind::DateHistogram { interval }, FacetPartial::Dates(counts)) => {
                    let buckets = counts
                        .into_iter()
                        .filter_map(|(start, count)| {
                            let start = chrono::DateTime::from_timestamp_micros(start)?;
                            let (start, end) = date_bucket(start, *interval);
                            Some(Bucket {
                                value: Value::String(format_date(start)),
                                to: Some(Value::String(format_date(end))),
                                count,
                            })
                        })
                        .collect();
                    (Some(buckets), None)
                }
                (FacetPlanKind::Sum, FacetPartial::Stats { sum, .. }) => {
                    (None, Some(number_value(sum)))
                }
                (FacetPlanKind::Avg, FacetPartial::Stats { sum, values }) => (
                    None,
                    Some(if values == 0 {
                        Value::Null
                    } else {
                        number_value(sum / values as f64)
                    }),
                ),
                _ => (None, None),
            };
            FacetResult {
                name: plan.name.clone(),
                buckets,
                value,
            }
        })
        .collect()
}

/// A field value as results show it.
fn json_value(value: FieldValue) -> Value {
    match value {
        FieldValue::String(s) => Value::String(s),
        FieldValue::Number(n) => number_value(n),
        FieldValue::Date(d) => Value::String(format_date(d)),
        FieldValue::Boolean(b) => Value::Bool(b),
    }
}
