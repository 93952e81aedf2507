//! Ingest and delete tasks: a request is checked at once (shape, size, the
//! index is open, the caller is a writer), stored as a task and answered
//! with its id; the service's one task processor then applies each index's
//! tasks strictly in submission order (the store's `seq`).
//!
//! The processor wakes when a task is queued ([`SearchHub::wake`]) and
//! otherwise every few seconds (tasks queued by another replica). On start
//! it resumes tasks left `pending` or `progress` by a stopped service:
//! ingest is an idempotent upsert and delete removes what is there, so
//! applying a task again is safe. With several replicas, a task is claimed
//! once (pending → progress), and a replica skips an index whose oldest
//! unfinished task another replica is applying (a replica that stops
//! mid-task leaves it in `progress` until a replica restarts).
//!
//! Per entry, an ingest rejects principals in `visible_to` that are not
//! well formed or name an identity or group that does not exist (`public`
//! and `all_authenticated_users` always do), and whatever the engine
//! rejects; the rest are applied. A task with any rejected entry ends
//! `failed` and lists every rejected entry.

use std::collections::HashMap;
use std::time::Duration;

use chrono::Utc;
use lattice_protocol::search::{
    DeleteTarget, Entry, IndexRoleName, IndexStatus, IngestDocument, RejectedEntry, SearchTaskInfo,
    SearchTaskKind, SearchTaskState, TaskSubmitted,
};
use lattice_protocol::sharing::Principal;
use lattice_protocol::{SearchIndexId, SearchTaskId};
use lattice_search::EntryOutcome;

use super::indexes::{self, Known};
use super::{Asker, RateKind, SearchHub, SearchResult, SearchServiceError};
use crate::store::{SearchTaskOutcome, SearchTaskRecord, SharedStore};

/// How often the processor looks for tasks nobody woke it for.
const POLL_INTERVAL: Duration = Duration::from_secs(5);
/// Most tasks one list shows.
pub const MAX_TASK_LIST: u32 = 1_000;

/// Checks an ingest request and queues it.
pub async fn submit_ingest(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    index: SearchIndexId,
    document: IngestDocument,
) -> SearchResult<TaskSubmitted> {
    let entries = document.into_entries();
    if entries.is_empty() {
        return Err(SearchServiceError::invalid(
            "the ingest document has no entries",
        ));
    }
    let payload = serde_json::to_string(&entries).expect("entries serialize");
    submit(
        store,
        hub,
        asker,
        index,
        SearchTaskKind::Ingest,
        payload,
        entries.len(),
    )
    .await
}

/// Checks a delete request and queues it.
pub async fn submit_delete(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    index: SearchIndexId,
    target: DeleteTarget,
) -> SearchResult<TaskSubmitted> {
    match &target {
        DeleteTarget::Subjects { subjects } if subjects.is_empty() => {
            return Err(SearchServiceError::invalid("no subjects to delete"));
        }
        DeleteTarget::Subjects { subjects } if subjects.iter().any(|s| s.is_empty()) => {
            return Err(SearchServiceError::invalid("a subject must not be empty"));
        }
        DeleteTarget::Entry { subject, .. } if subject.is_empty() => {
            return Err(SearchServiceError::invalid("a subject must not be empty"));
        }
        _ => {}
    }
    let payload = serde_json::to_string(&target).expect("delete targets serialize");
    submit(store, hub, asker, index, SearchTaskKind::Delete, payload, 0).await
}

async fn submit(
    store: &SharedStore,
    hub: &SearchHub,
    asker: &Asker,
    index: SearchIndexId,
    kind: SearchTaskKind,
    payload: String,
    entries_total: usize,
) -> SearchResult<TaskSubmitted> {
    let identity = asker.require_identity()?;
    let known = indexes::load(store, asker, index).await?;
    known.require(IndexRoleName::Writer, "ingest or delete entries")?;
    known.require_open()?;
    hub.engine()?;
    hub.rate.check(RateKind::Write, identity)?;
    let task = SearchTaskRecord {
        id: SearchTaskId::new(),
        seq: 0,
        index_id: index,
        kind,
        state: SearchTaskState::Pending,
        submitted_by: identity,
        payload,
        entries_total: entries_total as u64,
        entries_applied: 0,
        rejected: Vec::new(),
        message: None,
        created_at: crate::store::from_millis(crate::store::to_millis(Utc::now())),
        started_at: None,
        completed_at: None,
    };
    let task = store.insert_search_task(&task).await?;
    tracing::info!(task_id = %task.id, index_id = %index, kind = ?kind, seq = task.seq, "search task queued");
    hub.wake.notify_one();
    Ok(TaskSubmitted {
        task_id: task.id,
        state: task.state,
    })
}

fn task_info(task: SearchTaskRecord) -> SearchTaskInfo {
    SearchTaskInfo {
        task_id: task.id,
        index_id: task.index_id,
        kind: task.kind,
        state: task.state,
        submitted_by: task.submitted_by,
        created_at: task.created_at,
        completed_at: task.completed_at,
        entries_total: task.entries_total,
        entries_applied: task.entries_applied,
        rejected: task.rejected,
        message: task.message,
    }
}

/// A task, for its submitter and the index's writers, admins and owners.
pub async fn show(
    store: &SharedStore,
    asker: &Asker,
    id: SearchTaskId,
) -> SearchResult<SearchTaskInfo> {
    let identity = asker.require_identity()?;
    let not_found = || SearchServiceError::NotFound(format!("search task {id} does not exist"));
    let mut task = store.search_task(id).await?.ok_or_else(not_found)?;
    if task.submitted_by != identity && !asker.viewer.is(task.submitted_by) {
        let role = indexes::role_of(store, asker, task.index_id).await?;
        if role.is_none_or(|r| r < IndexRoleName::Writer) {
            return Err(not_found());
        }
    }
    task.payload.clear();
    Ok(task_info(task))
}

/// The newest tasks of an index (writers, admins and owners).
pub async fn list(
    store: &SharedStore,
    asker: &Asker,
    index: SearchIndexId,
    limit: u32,
) -> SearchResult<Vec<SearchTaskInfo>> {
    asker.require_identity()?;
    let known: Known = indexes::load(store, asker, index).await?;
    known.require(IndexRoleName::Writer, "list its tasks")?;
    let tasks = store
        .search_tasks(index, limit.clamp(1, MAX_TASK_LIST))
        .await?;
    Ok(tasks.into_iter().map(task_info).collect())
}

// ------------------------------------------------------------------ processor

/// Applies queued tasks until the returned handle is aborted; also purges
/// deleted indexes after their grace period.
pub fn spawn_processor(
    store: SharedStore,
    hub: std::sync::Arc<SearchHub>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if hub.engine().is_err() {
            return;
        }
        let mut resuming = true;
        let mut last_housekeeping = tokio::time::Instant::now();
        loop {
            if let Err(e) = run_queued(&store, &hub, resuming).await {
                tracing::error!(error = %e, "search task processor");
            }
            resuming = false;
            if last_housekeeping.elapsed() >= super::HOUSEKEEPING_INTERVAL {
                last_housekeeping = tokio::time::Instant::now();
                hub.rate.forget_idle();
                if let Err(e) = indexes::purge_expired(&store, &hub).await {
                    tracing::error!(error = %e, "purging deleted search indexes");
                }
            }
            tokio::select! {
                _ = hub.wake.notified() => {}
                _ = tokio::time::sleep(POLL_INTERVAL) => {}
            }
        }
    })
}

/// Applies every unfinished task, index by index, each index's in order.
/// `resuming`: also take tasks left in `progress` (by this service before
/// it stopped).
async fn run_queued(store: &SharedStore, hub: &SearchHub, resuming: bool) -> SearchResult<()> {
    for index in store.indexes_with_unfinished_tasks().await? {
        while let Some(task) = store.next_search_task(index).await? {
            if task.state == SearchTaskState::Progress && !resuming {
                // Another replica is applying it.
                break;
            }
            if !store
                .start_search_task(task.id, task.state, Utc::now())
                .await?
            {
                // Another replica claimed it first.
                break;
            }
            let outcome = apply(store, hub, &task).await;
            store.finish_search_task(task.id, &outcome).await?;
            tracing::info!(task_id = %task.id, index_id = %index, state = ?outcome.state,
                applied = outcome.entries_applied, rejected = outcome.rejected.len(), "search task done");
        }
    }
    Ok(())
}

/// Runs one task and says how it ended (never an error: a task that cannot
/// run ends `failed` with the reason).
async fn apply(store: &SharedStore, hub: &SearchHub, task: &SearchTaskRecord) -> SearchTaskOutcome {
    let failed = |message: String| SearchTaskOutcome {
        state: SearchTaskState::Failed,
        entries_applied: 0,
        rejected: Vec::new(),
        message: Some(message),
        completed_at: Utc::now(),
    };
    match store.search_index(task.index_id).await {
        Ok(Some(index)) if index.status == IndexStatus::Open => {}
        Ok(_) => {
            return failed(format!(
                "search index {} was deleted before the task ran",
                task.index_id
            ))
        }
        Err(e) => return failed(format!("cannot read the index: {e}")),
    }
    let engine = match hub.engine() {
        Ok(engine) => engine,
        Err(e) => return failed(e.to_string()),
    };
    let result = match task.kind {
        SearchTaskKind::Ingest => match serde_json::from_str::<Vec<Entry>>(&task.payload) {
            Ok(entries) => ingest(store, hub, task.index_id, entries).await,
            Err(e) => Err(SearchServiceError::Engine(format!(
                "unreadable task payload: {e}"
            ))),
        },
        SearchTaskKind::Delete => match serde_json::from_str::<DeleteTarget>(&task.payload) {
            Ok(target) => engine
                .delete(task.index_id, &target)
                .await
                .map(|removed| (removed, Vec::new()))
                .map_err(Into::into),
            Err(e) => Err(SearchServiceError::Engine(format!(
                "unreadable task payload: {e}"
            ))),
        },
        SearchTaskKind::Crawl => Err(SearchServiceError::invalid(
            "crawl tasks are not run by this service version",
        )),
    };
    match result {
        Ok((applied, rejected)) => SearchTaskOutcome {
            state: if rejected.is_empty() {
                SearchTaskState::Success
            } else {
                SearchTaskState::Failed
            },
            entries_applied: applied,
            message: (!rejected.is_empty())
                .then(|| format!("{} of the task's entries were rejected", rejected.len())),
            rejected,
            completed_at: Utc::now(),
        },
        Err(SearchServiceError::Engine(e)) => {
            tracing::error!(task_id = %task.id, error = %e, "search task failed in the engine");
            failed("the search engine failed; the service log has the details".to_owned())
        }
        Err(e) => failed(e.to_string()),
    }
}

/// Writes the entries whose principals exist; answers how many were
/// applied and which were rejected, in request order.
async fn ingest(
    store: &SharedStore,
    hub: &SearchHub,
    index: SearchIndexId,
    entries: Vec<Entry>,
) -> SearchResult<(u64, Vec<RejectedEntry>)> {
    let engine = hub.engine()?;
    let mut rejected = Vec::new();
    let mut positions = Vec::with_capacity(entries.len());
    let mut accepted = Vec::with_capacity(entries.len());
    let mut known: HashMap<String, Result<String, String>> = HashMap::new();
    for (position, mut entry) in entries.into_iter().enumerate() {
        match canonical_principals(store, &mut known, &entry.visible_to).await? {
            Ok(principals) => {
                entry.visible_to = principals;
                positions.push(position);
                accepted.push(entry);
            }
            Err(reason) => rejected.push(RejectedEntry {
                position,
                subject: entry.subject,
                entry_id: entry.id,
                reason,
            }),
        }
    }
    let mut applied = 0;
    if !accepted.is_empty() {
        let kept: Vec<(String, Option<String>)> = accepted
            .iter()
            .map(|e| (e.subject.clone(), e.id.clone()))
            .collect();
        let outcomes = engine.ingest(index, accepted, &hub.limits).await?;
        for ((position, (subject, entry_id)), outcome) in
            positions.into_iter().zip(kept).zip(outcomes)
        {
            match outcome {
                EntryOutcome::Applied => applied += 1,
                EntryOutcome::Rejected(reason) => rejected.push(RejectedEntry {
                    position,
                    subject,
                    entry_id,
                    reason,
                }),
            }
        }
    }
    rejected.sort_by_key(|r| r.position);
    Ok((applied, rejected))
}

/// The entry's principals in canonical form, or why one is unacceptable.
/// `cache` remembers each principal's verdict for the task.
async fn canonical_principals(
    store: &SharedStore,
    cache: &mut HashMap<String, Result<String, String>>,
    visible_to: &[String],
) -> SearchResult<Result<Vec<String>, String>> {
    if visible_to.is_empty() {
        return Ok(Err(
            "visible_to is empty: name at least one principal (e.g. `public`)".to_owned(),
        ));
    }
    let mut out = Vec::with_capacity(visible_to.len());
    for given in visible_to {
        if !cache.contains_key(given) {
            let verdict = check_principal(store, given).await?;
            cache.insert(given.clone(), verdict);
        }
        match &cache[given] {
            Ok(canonical) => out.push(canonical.clone()),
            Err(reason) => return Ok(Err(reason.clone())),
        }
    }
    out.sort();
    out.dedup();
    Ok(Ok(out))
}

async fn check_principal(store: &SharedStore, given: &str) -> SearchResult<Result<String, String>> {
    let principal: Principal = match given.parse() {
        Ok(p) => p,
        Err(e) => return Ok(Err(format!("visible_to: {e}"))),
    };
    let exists = match principal {
        Principal::Public | Principal::AllAuthenticatedUsers => true,
        Principal::Identity(id) => store.identity(id).await?.is_some(),
        Principal::Group(id) => store.group(id).await?.is_some(),
    };
    Ok(if exists {
        Ok(principal.to_string())
    } else {
        Err(format!("visible_to: {principal} does not exist"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `public` and `all_authenticated_users` always pass; identities and
    /// groups must exist; other spellings are canonicalized or refused.
    #[tokio::test]
    async fn principals_of_entries_must_exist_and_are_canonical() {
        use crate::store::testing::TestStore;
        use lattice_protocol::api::Identity;
        let test = TestStore::sqlite().await;
        let store = &test.store;
        let ada = Identity {
            id: lattice_protocol::IdentityId::new(),
            username: "ada".into(),
            display_name: None,
            email: None,
            identity_provider: "https://idp.example.org".into(),
            subject: "ada".into(),
            created_at: Utc::now(),
        };
        store.insert_identity(&ada).await.unwrap();
        let mut cache = HashMap::new();
        let given = [
            "public".to_owned(),
            format!("urn:globus:auth:identity:{}", ada.id),
            "all_authenticated_users".to_owned(),
            "public".to_owned(),
        ];
        let canonical = canonical_principals(store, &mut cache, &given)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            canonical,
            [
                "all_authenticated_users".to_owned(),
                format!("identity:{}", ada.id),
                "public".to_owned()
            ]
        );
        let ghost = format!("group:{}", uuid::Uuid::new_v4());
        let refused = canonical_principals(store, &mut cache, &[ghost])
            .await
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("does not exist"), "{refused}");
        let refused = canonical_principals(store, &mut cache, &["user:ada".into()])
            .await
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("not valid"), "{refused}");
        let refused = canonical_principals(store, &mut cache, &[])
            .await
            .unwrap()
            .unwrap_err();
        assert!(refused.contains("empty"), "{refused}");
    }
}
