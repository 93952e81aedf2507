//! Persistent state of the data plane: collections announced by agents,
//! transfer tasks, their events and recorded checksums. Same pattern as the
//! compute tables: SQL written once, instantiated for both back ends by
//! `impl_transfer_store!`.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use lattice_protocol::sharing::SharingPolicy;
use lattice_protocol::transfer::{
    CollectionAnnounce, FileChecksum, Side, TaskKind, TransferCounters, TransferEventInfo,
    TransferItem, TransferNotifyOn, TransferOptions, TransferStatus, TransferTuning,
};
use lattice_protocol::{CollectionId, EndpointId, IdentityId, TransferId};

use super::sql::{PostgresStore, SqliteStore};
use super::{corrupt, from_millis, to_millis, uuid_of, StoreResult};

/// A collection as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectionRecord {
    pub id: CollectionId,
    pub owner_id: IdentityId,
    pub endpoint_id: EndpointId,
    pub name: String,
    pub root: String,
    pub created_at: DateTime<Utc>,
    pub announced_at: DateTime<Utc>,
    pub withdrawn_at: Option<DateTime<Utc>>,
    /// For a guest collection: the host collection and the directory of
    /// it that is this collection's root.
    pub guest_of: Option<GuestOf>,
    /// What guest collections may share of this collection; `None` is the
    /// default policy.
    pub sharing_policy: Option<SharingPolicy>,
}

/// Where a guest collection lives in its host collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestOf {
    pub host: CollectionId,
    /// A directory of the host, `/`-separated, starting and ending with `/`.
    pub path: String,
}

/// A transfer task as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferRecord {
    pub id: TransferId,
    pub kind: TaskKind,
    pub owner_id: IdentityId,
    pub label: Option<String>,
    pub status: TransferStatus,
    pub status_message: Option<String>,
    pub source_collection: CollectionId,
    pub destination_collection: CollectionId,
    pub items: Vec<TransferItem>,
    pub options: TransferOptions,
    pub tuning: TransferTuning,
    pub deadline: Option<DateTime<Utc>>,
    pub submission_id: Option<String>,
    pub submitted_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    pub items_done: u32,
    pub attempts: u32,
    pub counters: TransferCounters,
    /// Which ends of the task its owner is told about.
    pub notify_on: TransferNotifyOn,
}

/// The mutable state of a transfer, as its runner (or a cancel) writes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferProgress<'a> {
    pub status: TransferStatus,
    pub status_message: Option<&'a str>,
    pub items_done: u32,
    pub attempts: u32,
    pub counters: &'a TransferCounters,
    pub completed_at: Option<DateTime<Utc>>,
}

/// An event to record (the store assigns `seq`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewTransferEvent {
    pub transfer_id: TransferId,
    pub time: DateTime<Utc>,
    pub code: String,
    pub fault: bool,
    pub side: Option<Side>,
    pub path: Option<String>,
    pub message: String,
    pub item: u32,
    pub attempt: u32,
}

#[async_trait]
pub trait TransferStore: Send + Sync + 'static {
    /// Records the collections an endpoint's agent announced (new names are
    /// created, known ones refreshed) and marks its other collections
    /// withdrawn. A name the owner already uses on another endpoint is
    /// left alone and returned.
    async fn announce_collections(
        &self,
        endpoint: EndpointId,
        owner: IdentityId,
        announced: &[CollectionAnnounce],
        at: DateTime<Utc>,
    ) -> StoreResult<Vec<String>>;
    async fn collection(&self, id: CollectionId) -> StoreResult<Option<CollectionRecord>>;
    async fn collection_by_name(
        &self,
        owner: IdentityId,
        name: &str,
    ) -> StoreResult<Option<CollectionRecord>>;
    /// The owner's collections that are not withdrawn, by name.
    async fn collections_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<CollectionRecord>>;

    /// Fails with `Conflict` if the owner already used the submission id.
    async fn insert_transfer(&self, transfer: &TransferRecord) -> StoreResult<()>;
    async fn transfer(&self, id: TransferId) -> StoreResult<Option<TransferRecord>>;
    async fn transfer_by_submission(
        &self,
        owner: IdentityId,
        submission_id: &str,
    ) -> StoreResult<Option<TransferRecord>>;
    /// Newest first.
    async fn transfers_owned_by(
        &self,
        owner: IdentityId,
        limit: u32,
    ) -> StoreResult<Vec<TransferRecord>>;
    /// Every transfer that is not final (to resume at service start).
    async fn unfinished_transfers(&self) -> StoreResult<Vec<TransferRecord>>;
    /// Updates status, progress and counters of a transfer that is not final;
    /// false if it is final (e.g. cancelled meanwhile).
    async fn update_transfer(
        &self,
        id: TransferId,
        progress: &TransferProgress<'_>,
    ) -> StoreResult<bool>;

    async fn insert_transfer_event(&self, event: &NewTransferEvent) -> StoreResult<()>;
    /// Events with `seq > after`, oldest first.
    async fn transfer_events(
        &self,
        id: TransferId,
        after: i64,
        limit: u32,
    ) -> StoreResult<Vec<TransferEventInfo>>;
    async fn count_transfer_faults(&self, id: TransferId) -> StoreResult<u64>;

    async fn insert_checksums(
        &self,
        id: TransferId,
        item: u32,
        checksums: &[FileChecksum],
    ) -> StoreResult<()>;
    async fn transfer_checksums(&self, id: TransferId) -> StoreResult<Vec<FileChecksum>>;
}

pub(super) const COLLECTION_COLUMNS: &str =
    "id, owner_id, endpoint_id, name, root, created_at, announced_at, withdrawn_at, host_collection_id, host_path, sharing_policy";

#[derive(sqlx::FromRow)]
pub(super) struct CollectionRow {
    id: String,
    owner_id: String,
    endpoint_id: String,
    name: String,
    root: String,
    created_at: i64,
    announced_at: i64,
    withdrawn_at: Option<i64>,
    host_collection_id: Option<String>,
    host_path: Option<String>,
    sharing_policy: Option<String>,
}

impl CollectionRow {
    pub(super) fn into_record(self) -> StoreResult<CollectionRecord> {
        const T: &str = "collections";
        Ok(CollectionRecord {
            id: CollectionId(uuid_of(T, &self.id)?),
            owner_id: IdentityId(uuid_of(T, &self.owner_id)?),
            endpoint_id: EndpointId(uuid_of(T, &self.endpoint_id)?),
            name: self.name,
            root: self.root,
            created_at: from_millis(self.created_at),
            announced_at: from_millis(self.announced_at),
            withdrawn_at: self.withdrawn_at.map(from_millis),
            guest_of: match (self.host_collection_id, self.host_path) {
                (Some(host), Some(path)) => Some(GuestOf {
                    host: CollectionId(uuid_of(T, &host)?),
                    path,
                }),
                (None, None) => None,
                _ => return Err(corrupt(T, "a guest collection without host or path")),
            },
            sharing_policy: self
                .sharing_policy
                .map(|p| serde_json::from_str(&p).map_err(|e| corrupt(T, e)))
                .transpose()?,
        })
    }
}

const TRANSFER_COLUMNS: &str = "id, kind, owner_id, label, status, status_message, source_collection, destination_collection, items, options, deadline, submission_id, submitted_at, completed_at, items_done, attempts, counters, tuning, notify_on";

#[derive(sqlx::FromRow)]
struct TransferRow {
    id: String,
    kind: String,
    owner_id: String,
    label: Option<String>,
    status: String,
    status_message: Option<String>,
    source_collection: String,
    destination_collection: String,
    items: String,
    options: String,
    deadline: Option<i64>,
    submission_id: Option<String>,
    submitted_at: i64,
    completed_at: Option<i64>,
    items_done: i64,
    attempts: i64,
    counters: String,
    tuning: String,
    notify_on: String,
}

impl TransferRow {
    fn into_record(self) -> StoreResult<TransferRecord> {
        const T: &str = "transfers";
        Ok(TransferRecord {
            id: TransferId(uuid_of(T, &self.id)?),
            kind: serde_json::from_str(&self.kind).map_err(|e| corrupt(T, e))?,
            owner_id: IdentityId(uuid_of(T, &self.owner_id)?),
            label: self.label,
            status: TransferStatus::parse(&self.status)
                .ok_or_else(|| corrupt(T, format!("bad status `{}`", self.status)))?,
            status_message: self.status_message,
            source_collection: CollectionId(uuid_of(T, &self.source_collection)?),
            destination_collection: CollectionId(uuid_of(T, &self.destination_collection)?),
            items: serde_json::from_str(&self.items).map_err(|e| corrupt(T, e))?,
            options: serde_json::from_str(&self.options).map_err(|e| corrupt(T, e))?,
            tuning: serde_json::from_str(&self.tuning).map_err(|e| corrupt(T, e))?,
            deadline: self.deadline.map(from_millis),
            submission_id: self.submission_id,
            submitted_at: from_millis(self.submitted_at),
            completed_at: self.completed_at.map(from_millis),
            items_done: self.items_done.max(0) as u32,
            attempts: self.attempts.max(0) as u32,
            counters: serde_json::from_str(&self.counters).map_err(|e| corrupt(T, e))?,
            // Rows from before migration 0013 hold '': the default.
            notify_on: if self.notify_on.is_empty() {
                TransferNotifyOn::default()
            } else {
                serde_json::from_str(&self.notify_on).map_err(|e| corrupt(T, e))?
            },
        })
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    time: i64,
    code: String,
    fault: i64,
    side: Option<String>,
    path: Option<String>,
    message: String,
    item: i64,
    attempt: i64,
}

impl EventRow {
    fn into_info(self) -> TransferEventInfo {
        TransferEventInfo {
            seq: self.seq,
            time: from_millis(self.time),
            code: self.code,
            fault: self.fault != 0,
            side: match self.side.as_deref() {
                Some("source") => Some(Side::Source),
                Some("destination") => Some(Side::Destination),
                _ => None,
            },
            path: self.path,
            message: self.message,
            item: self.item.max(0) as u32,
            attempt: self.attempt.max(0) as u32,
        }
    }
}

fn side_text(side: Option<Side>) -> Option<&'static str> {
    side.map(|s| match s {
        Side::Source => "source",
        Side::Destination => "destination",
    })
}

macro_rules! impl_transfer_store {
    ($store:ty) => {
        #[async_trait]
        impl TransferStore for $store {
            async fn announce_collections(
                &self,
                endpoint: EndpointId,
                owner: IdentityId,
                announced: &[CollectionAnnounce],
                at: DateTime<Utc>,
            ) -> StoreResult<Vec<String>> {
                let mut tx = self.pool.begin().await?;
                let mut refused = Vec::new();
                for c in announced {
                    let existing: Option<CollectionRow> = sqlx::query_as(&format!(
                        "SELECT {COLLECTION_COLUMNS} FROM collections WHERE owner_id = $1 AND name = $2"
                    ))
                    .bind(owner.to_string())
                    .bind(&c.name)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match existing {
                        // The owner's guest collection of that name: the
                        // announced one cannot take its name.
                        Some(row) if row.host_collection_id.is_some() => {
                            refused.push(c.name.clone());
                        }
                        Some(row) if row.endpoint_id != endpoint.to_string() && row.withdrawn_at.is_none() => {
                            refused.push(c.name.clone());
                        }
                        Some(row) => {
                            sqlx::query("UPDATE collections SET endpoint_id = $2, root = $3, announced_at = $4, withdrawn_at = NULL WHERE id = $1")
                                .bind(&row.id)
                                .bind(endpoint.to_string())
                                .bind(&c.root)
                                .bind(to_millis(at))
                                .execute(&mut *tx)
                                .await?;
                        }
                        None => {
                            sqlx::query(&format!(
                                "INSERT INTO collections ({COLLECTION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $6, NULL, NULL, NULL, NULL)"
                            ))
                            .bind(CollectionId::new().to_string())
                            .bind(owner.to_string())
                            .bind(endpoint.to_string())
                            .bind(&c.name)
                            .bind(&c.root)
                            .bind(to_millis(at))
                            .execute(&mut *tx)
                            .await?;
                        }
                    }
                }
                let hosted: Vec<CollectionRow> = sqlx::query_as(&format!(
                    "SELECT {COLLECTION_COLUMNS} FROM collections WHERE endpoint_id = $1 AND withdrawn_at IS NULL AND host_collection_id IS NULL"
                ))
                .bind(endpoint.to_string())
                .fetch_all(&mut *tx)
                .await?;
                for row in hosted {
                    if !announced.iter().any(|c| c.name == row.name) {
                        sqlx::query("UPDATE collections SET withdrawn_at = $2 WHERE id = $1")
                            .bind(&row.id)
                            .bind(to_millis(at))
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                tx.commit().await?;
                Ok(refused)
            }

            async fn collection(&self, id: CollectionId) -> StoreResult<Option<CollectionRecord>> {
                let row: Option<CollectionRow> = sqlx::query_as(&format!(
                    "SELECT {COLLECTION_COLUMNS} FROM collections WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(CollectionRow::into_record).transpose()
            }

            async fn collection_by_name(
                &self,
                owner: IdentityId,
                name: &str,
            ) -> StoreResult<Option<CollectionRecord>> {
                let row: Option<CollectionRow> = sqlx::query_as(&format!(
                    "SELECT {COLLECTION_COLUMNS} FROM collections WHERE owner_id = $1 AND name = $2"
                ))
                .bind(owner.to_string())
                .bind(name)
                .fetch_optional(&self.pool)
                .await?;
                row.map(CollectionRow::into_record).transpose()
            }

            async fn collections_owned_by(&self, owner: IdentityId) -> StoreResult<Vec<CollectionRecord>> {
                let rows: Vec<CollectionRow> = sqlx::query_as(&format!(
                    "SELECT {COLLECTION_COLUMNS} FROM collections WHERE owner_id = $1 AND withdrawn_at IS NULL ORDER BY name"
                ))
                .bind(owner.to_string())
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(CollectionRow::into_record).collect()
            }

            async fn insert_transfer(&self, t: &TransferRecord) -> StoreResult<()> {
                sqlx::query(&format!(
                    "INSERT INTO transfers ({TRANSFER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
                ))
                .bind(t.id.to_string())
                .bind(serde_json::to_string(&t.kind).expect("kind serializes"))
                .bind(t.owner_id.to_string())
                .bind(&t.label)
                .bind(t.status.as_str())
                .bind(&t.status_message)
                .bind(t.source_collection.to_string())
                .bind(t.destination_collection.to_string())
                .bind(serde_json::to_string(&t.items).expect("items serialize"))
                .bind(serde_json::to_string(&t.options).expect("options serialize"))
                .bind(t.deadline.map(to_millis))
                .bind(&t.submission_id)
                .bind(to_millis(t.submitted_at))
                .bind(t.completed_at.map(to_millis))
                .bind(i64::from(t.items_done))
                .bind(i64::from(t.attempts))
                .bind(serde_json::to_string(&t.counters).expect("counters serialize"))
                .bind(serde_json::to_string(&t.tuning).expect("tuning serializes"))
                .bind(serde_json::to_string(&t.notify_on).expect("notify_on serializes"))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn transfer(&self, id: TransferId) -> StoreResult<Option<TransferRecord>> {
                let row: Option<TransferRow> = sqlx::query_as(&format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE id = $1"
                ))
                .bind(id.to_string())
                .fetch_optional(&self.pool)
                .await?;
                row.map(TransferRow::into_record).transpose()
            }

            async fn transfer_by_submission(
                &self,
                owner: IdentityId,
                submission_id: &str,
            ) -> StoreResult<Option<TransferRecord>> {
                let row: Option<TransferRow> = sqlx::query_as(&format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE owner_id = $1 AND submission_id = $2"
                ))
                .bind(owner.to_string())
                .bind(submission_id)
                .fetch_optional(&self.pool)
                .await?;
                row.map(TransferRow::into_record).transpose()
            }

            async fn transfers_owned_by(
                &self,
                owner: IdentityId,
                limit: u32,
            ) -> StoreResult<Vec<TransferRecord>> {
                let rows: Vec<TransferRow> = sqlx::query_as(&format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE owner_id = $1 ORDER BY submitted_at DESC, id LIMIT $2"
                ))
                .bind(owner.to_string())
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TransferRow::into_record).collect()
            }

            async fn unfinished_transfers(&self) -> StoreResult<Vec<TransferRecord>> {
                let rows: Vec<TransferRow> = sqlx::query_as(&format!(
                    "SELECT {TRANSFER_COLUMNS} FROM transfers WHERE status IN ('active', 'paused') ORDER BY submitted_at"
                ))
                .fetch_all(&self.pool)
                .await?;
                rows.into_iter().map(TransferRow::into_record).collect()
            }

            async fn update_transfer(
                &self,
                id: TransferId,
                p: &TransferProgress<'_>,
            ) -> StoreResult<bool> {
                let done = sqlx::query(
                    "UPDATE transfers SET status = $2, status_message = $3, items_done = $4, attempts = $5, counters = $6, completed_at = $7 \
                     WHERE id = $1 AND status IN ('active', 'paused')",
                )
                .bind(id.to_string())
                .bind(p.status.as_str())
                .bind(p.status_message)
                .bind(i64::from(p.items_done))
                .bind(i64::from(p.attempts))
                .bind(serde_json::to_string(p.counters).expect("counters serialize"))
                .bind(p.completed_at.map(to_millis))
                .execute(&self.pool)
                .await?;
                Ok(done.rows_affected() == 1)
            }

            async fn insert_transfer_event(&self, e: &NewTransferEvent) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO transfer_events (transfer_id, time, code, fault, side, path, message, item, attempt) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                )
                .bind(e.transfer_id.to_string())
                .bind(to_millis(e.time))
                .bind(&e.code)
                .bind(i64::from(e.fault))
                .bind(side_text(e.side))
                .bind(&e.path)
                .bind(&e.message)
                .bind(i64::from(e.item))
                .bind(i64::from(e.attempt))
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn transfer_events(
                &self,
                id: TransferId,
                after: i64,
                limit: u32,
            ) -> StoreResult<Vec<TransferEventInfo>> {
                let rows: Vec<EventRow> = sqlx::query_as(
                    "SELECT seq, time, code, fault, side, path, message, item, attempt FROM transfer_events \
                     WHERE transfer_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                )
                .bind(id.to_string())
                .bind(after)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(EventRow::into_info).collect())
            }

            async fn count_transfer_faults(&self, id: TransferId) -> StoreResult<u64> {
                let (count,): (i64,) = sqlx::query_as(
                    "SELECT COUNT(*) FROM transfer_events WHERE transfer_id = $1 AND fault = 1",
                )
                .bind(id.to_string())
                .fetch_one(&self.pool)
                .await?;
                Ok(count.max(0) as u64)
            }

            async fn insert_checksums(
                &self,
                id: TransferId,
                item: u32,
                checksums: &[FileChecksum],
            ) -> StoreResult<()> {
                let mut tx = self.pool.begin().await?;
                for c in checksums {
                    sqlx::query(
                        "INSERT INTO transfer_checksums (transfer_id, item, path, size, blake3) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (transfer_id, item, path) DO UPDATE SET size = excluded.size, blake3 = excluded.blake3",
                    )
                    .bind(id.to_string())
                    .bind(i64::from(item))
                    .bind(&c.path)
                    .bind(c.size as i64)
                    .bind(&c.blake3)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn transfer_checksums(&self, id: TransferId) -> StoreResult<Vec<FileChecksum>> {
                let rows: Vec<(String, i64, String)> = sqlx::query_as(
                    "SELECT path, size, blake3 FROM transfer_checksums WHERE transfer_id = $1 ORDER BY item, path",
                )
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?;
                Ok(rows
                    .into_iter()
                    .map(|(path, size, blake3)| FileChecksum {
                        path,
                        size: size.max(0) as u64,
                        blake3,
                    })
                    .collect())
            }
        }
    };
}

impl_transfer_store!(SqliteStore);
impl_transfer_store!(PostgresStore);
