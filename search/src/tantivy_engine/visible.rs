//! Visibility as a filter: the documents of a segment whose `visible_to`
//! holds one of the caller's principals, as a bitset kept per segment and
//! principal set across queries. Segments never change (deletes are
//! applied by tantivy apart from this), so a caller's second query reads
//! its bitset instead of merging posting lists again, and an intersection
//! seeks in it in constant time.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use tantivy::index::SegmentId;
use tantivy::query::{
    BitSetDocSet, ConstScorer, EnableScoring, Explanation, Query, Scorer, Weight,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{BitSet, DocId, DocSet, Score, SegmentReader, Term, TERMINATED};

/// Bitsets kept at most; past this the cache starts over (principal sets
/// are few per caller; this bounds memory whatever the callers).
const MAX_ENTRIES: usize = 1_024;

type Key = (SegmentId, Arc<Vec<String>>);

/// Visible documents per segment and principal set.
#[derive(Default)]
pub(crate) struct VisibleCache {
    sets: Mutex<HashMap<Key, Arc<BitSet>>>,
}

impl VisibleCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<BitSet>>> {
        // A panic elsewhere cannot leave the map half-updated: use it anyway.
        self.sets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Forgets segments that are no longer live.
    pub(crate) fn retain(&self, live: &HashSet<SegmentId>) {
        self.lock().retain(|(segment, _), _| live.contains(segment));
    }
}

/// Matches the documents visible to `principals`, each scoring 1 (as a
/// term set query would).
#[derive(Clone)]
pub(crate) struct VisibleQuery {
    field: Field,
    /// Sorted and deduplicated.
    principals: Arc<Vec<String>>,
    cache: Arc<VisibleCache>,
}

impl std::fmt::Debug for VisibleQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VisibleQuery")
            .field("principals", &self.principals)
            .finish()
    }
}

impl VisibleQuery {
    pub(crate) fn new(field: Field, principals: &[String], cache: Arc<VisibleCache>) -> Self {
        let principals: BTreeSet<&String> = principals.iter().collect();
        Self {
            field,
            principals: Arc::new(principals.into_iter().cloned().collect()),
            cache,
        }
    }
}

impl Query for VisibleQuery {
    fn weight(&self, _scoring: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl VisibleQuery {
    fn bitset(&self, reader: &SegmentReader) -> tantivy::Result<Arc<BitSet>> {
        let key = (reader.segment_id(), self.principals.clone());
        if let Some(set) = self.cache.lock().get(&key) {
            return Ok(set.clone());
        }
        // Built outside the lock; two queries may both build it, once.
        let inverted = reader.inverted_index(self.field)?;
        let mut set = BitSet::with_max_value(reader.max_doc());
        for principal in self.principals.iter() {
            let term = Term::from_field_text(self.field, principal);
            if let Some(mut postings) = inverted.read_postings(&term, IndexRecordOption::Basic)? {
                let mut doc = postings.doc();
                while doc != TERMINATED {
                    set.insert(doc);
                    doc = postings.advance();
                }
            }
        }
        let set = Arc::new(set);
        let mut sets = self.cache.lock();
        if sets.len() >= MAX_ENTRIES {
            sets.clear();
        }
        sets.insert(key, set.clone());
        Ok(set)
    }
}

impl Weight for VisibleQuery {
    fn scorer(&self, reader: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        let set = BitSet::clone(&*self.bitset(reader)?);
        Ok(Box::new(ConstScorer::new(BitSetDocSet::from(set), boost)))
    }

    fn explain(&self, reader: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        let mut scorer = self.scorer(reader, 1.0)?;
        if scorer.seek(doc) != doc {
            return Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} is not visible"
            )));
        }
        Ok(Explanation::new("visible", 1.0))
    }
}
