//! `lattice search ...`: search indexes and their roles, ingesting entries
//! (with `--wait`, the task's outcome and every rejected entry), queries
//! with filters and facets (and `--all`, which scrolls to the end),
//! subjects and tasks. Principals of roles may be written as for
//! `lattice acl` (a username, email or group name is resolved).

use std::time::{Duration, Instant};

use clap::{Subcommand, ValueEnum};
use lattice_client::Client;
use lattice_protocol::search::{
    Entry, Facet, FacetKind, FacetResult, Filter, IndexCreate, IndexInfo, IndexRole,
    IndexRoleCreate, IndexRoleName, IndexUpdate, IngestDocument, QueryMode, ScrollRequest,
    SearchQuery, SearchRequest, SearchResult, SearchTaskInfo, SearchTaskState, SortField,
    SortOrder, SubjectResult,
};
use lattice_protocol::{SearchIndexId, SearchTaskId};
use serde_json::Value;

use crate::commands::sharing::principal;
use crate::commands::tasks::{ExitWith, EXIT_TASK_FAILED, EXIT_TIMEOUT};
use crate::context::Context;
use crate::output::{id_of, one_named, UsageError};

#[derive(Subcommand, Debug)]
pub(crate) enum SearchCommand {
    /// Create, list, show, change, delete and restore indexes, and manage
    /// who may write to them (`lattice search index create "Beamline 7"`).
    #[command(subcommand)]
    Index(IndexCommand),
    /// Ingest entries from a JSON file: a GMetaEntry or GMetaList document,
    /// or a JSON list of entries. Example:
    /// `lattice search ingest beamline entries.json --wait`.
    Ingest {
        /// Index id or display name.
        index: String,
        /// The JSON file (`-` reads standard input).
        file: String,
        /// Wait for the task; exit non-zero (6) printing every rejected entry if any was rejected.
        #[arg(long)]
        wait: bool,
        /// Give up waiting after this many seconds (exit 7; the task goes on).
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        timeout: u64,
    },
    /// Search an index. Examples: `lattice search query beamline "silicon wafer"`,
    /// `lattice search query beamline 'sample:Si* AND energy:[10 TO *]' --advanced`,
    /// `lattice search query beamline --match instrument=xrd --facet sample --sort date:desc`.
    Query(QueryArgs),
    /// Show or delete the entries of one subject.
    #[command(subcommand)]
    Subject(SubjectCommand),
    /// Show ingest and delete tasks.
    #[command(subcommand)]
    Task(SearchTaskCommand),
}

#[derive(Subcommand, Debug)]
pub(crate) enum IndexCommand {
    /// Create an index; you become its owner. Example: `lattice search index create beamline --description "Beamline 7 datasets"`.
    Create {
        /// Display name.
        name: String,
        /// What the index holds.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Indexes on which you have a role (deleted ones too, until purged).
    List,
    /// One index: its entry count, fields and your role.
    Show {
        /// Index id or display name.
        index: String,
    },
    /// Change an index's name or description (admins and owners).
    Update {
        /// Index id or display name.
        index: String,
        /// New display name.
        #[arg(long)]
        name: Option<String>,
        /// New description.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an index (owners): restorable during the grace period, then purged.
    Delete {
        /// Index id or display name.
        index: String,
    },
    /// Restore a deleted index within its grace period (owners).
    Restore {
        /// Index id or display name.
        index: String,
    },
    /// Roles on an index: `lattice search index role add beamline bob --role writer`.
    #[command(subcommand)]
    Role(IndexRoleCommand),
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub(crate) enum RoleArg {
    /// Ingest and delete entries.
    Writer,
    /// Also roles, settings, and bypassing visibility.
    Admin,
    /// Everything, including deleting the index.
    Owner,
}

impl From<RoleArg> for IndexRoleName {
    fn from(r: RoleArg) -> Self {
        match r {
            RoleArg::Writer => IndexRoleName::Writer,
            RoleArg::Admin => IndexRoleName::Admin,
            RoleArg::Owner => IndexRoleName::Owner,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum IndexRoleCommand {
    /// Give a principal a role (admins; owners for `owner`). Example: `lattice search index role add beamline lab --role writer`.
    Add {
        /// Index id or display name.
        index: String,
        /// identity:ID, group:ID, or a username, email or group name.
        principal: String,
        /// writer, admin or owner.
        #[arg(long, value_enum, default_value = "writer")]
        role: RoleArg,
    },
    /// The roles on an index.
    List {
        /// Index id or display name.
        index: String,
    },
    /// Remove a role by its id (`lattice search index role list` shows ids).
    Delete {
        /// Index id or display name.
        index: String,
        /// The role's id.
        role: uuid::Uuid,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SubjectCommand {
    /// Every entry of a subject you may see. Example: `lattice search subject show beamline 'local:/data/run1.h5'`.
    Show {
        /// Index id or display name.
        index: String,
        /// The subject.
        subject: String,
        /// Index admins: also entries not visible to you.
        #[arg(long)]
        bypass_visibility: bool,
    },
    /// Delete every entry of a subject (writers), as a task; waits for it.
    Delete {
        /// Index id or display name.
        index: String,
        /// The subject.
        subject: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SearchTaskCommand {
    /// A task: state, counts and every rejected entry.
    Show {
        /// The task id (printed by `lattice search ingest`).
        #[arg(value_parser = id_of::<SearchTaskId>("search task", "`lattice search task list INDEX`"))]
        task: SearchTaskId,
    },
    /// The newest tasks of an index (writers and up).
    List {
        /// Index id or display name.
        index: String,
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
}

#[derive(clap::Args, Debug)]
pub(crate) struct QueryArgs {
    /// Index id or display name.
    index: String,
    /// Free text: every word must occur (with --advanced: `field:value`,
    /// AND/OR/NOT, "phrases", `field:[a TO b]`, wildcards). Absent: everything.
    q: Option<String>,
    /// Read Q in the advanced syntax.
    #[arg(long)]
    advanced: bool,
    /// A filter as JSON, e.g. `{"type":"range","field_name":"size","values":[{"from":100}]}`; repeatable.
    #[arg(long, value_name = "JSON")]
    filter: Vec<String>,
    /// Keep entries whose FIELD has VALUE (a number or true/false when it reads as one); repeatable.
    #[arg(long = "match", value_name = "FIELD=VALUE")]
    matches: Vec<String>,
    /// Count values of FIELD (terms, the default) or compute sum, avg or distinct_count; repeatable.
    #[arg(long, value_name = "FIELD[:KIND]")]
    facet: Vec<String>,
    /// Sort by FIELD, ascending or with `:desc` descending; repeatable.
    #[arg(long, value_name = "FIELD[:desc]")]
    sort: Vec<String>,
    /// Entries per page (at most 1000).
    #[arg(long, default_value_t = 10)]
    limit: usize,
    /// Entries to skip (offset + limit at most 10000: use --all past that).
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// Every matching entry: scrolls page by page (of --limit) to the end.
    #[arg(long, conflicts_with = "offset")]
    all: bool,
    /// Index admins: ignore visible_to.
    #[arg(long)]
    bypass_visibility: bool,
}

pub(crate) async fn run(ctx: &Context, command: SearchCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        SearchCommand::Index(command) => index(ctx, &client, command).await,
        SearchCommand::Ingest {
            index,
            file,
            wait,
            timeout,
        } => {
            let id = index_id(&client, &index).await?;
            let document = read_ingest_file(&file)?;
            let submitted = client.search_ingest(id, &document).await?;
            if !wait {
                return ctx.output.emit(&submitted, |s| s.task_id.to_string());
            }
            let task = wait_for(&client, submitted.task_id, timeout).await?;
            finish(ctx, &task)
        }
        SearchCommand::Query(args) => query(ctx, &client, args).await,
        SearchCommand::Subject(SubjectCommand::Show {
            index,
            subject,
            bypass_visibility,
        }) => {
            let id = index_id(&client, &index).await?;
            let found = client
                .search_subject(id, &subject, bypass_visibility)
                .await?;
            ctx.output.emit(&found, subject_text)
        }
        SearchCommand::Subject(SubjectCommand::Delete { index, subject }) => {
            let id = index_id(&client, &index).await?;
            let submitted = client.search_delete_subjects(id, &[subject]).await?;
            let task = wait_for(&client, submitted.task_id, 300).await?;
            finish(ctx, &task)
        }
        SearchCommand::Task(SearchTaskCommand::Show { task }) => {
            let task = client.search_task(task).await?;
            ctx.output.emit(&task, task_text)
        }
        SearchCommand::Task(SearchTaskCommand::List { index, limit }) => {
            let id = index_id(&client, &index).await?;
            let tasks = client.search_tasks(id, Some(limit)).await?;
            ctx.output.emit(&tasks, |tasks| {
                tasks.iter().map(task_line).collect::<Vec<_>>().join("\n")
            })
        }
    }
}

async fn index(ctx: &Context, client: &Client, command: IndexCommand) -> anyhow::Result<()> {
    match command {
        IndexCommand::Create { name, description } => {
            let index = client
                .create_search_index(&IndexCreate {
                    display_name: name,
                    description,
                })
                .await?;
            ctx.output.emit(&index, |i| i.id.to_string())
        }
        IndexCommand::List => {
            let indexes = client.search_indexes().await?;
            ctx.output.emit(&indexes, |all| {
                all.iter().map(index_line).collect::<Vec<_>>().join("\n")
            })
        }
        IndexCommand::Show { index } => {
            let id = index_id(client, &index).await?;
            let info = client.search_index(id).await?;
            ctx.output.emit(&info, index_text)
        }
        IndexCommand::Update {
            index,
            name,
            description,
        } => {
            if name.is_none() && description.is_none() {
                return Err(
                    UsageError("nothing to change: give --name or --description".into()).into(),
                );
            }
            let id = index_id(client, &index).await?;
            let info = client
                .update_search_index(
                    id,
                    &IndexUpdate {
                        display_name: name,
                        description,
                    },
                )
                .await?;
            ctx.output.emit(&info, index_text)
        }
        IndexCommand::Delete { index } => {
            let id = index_id(client, &index).await?;
            let info = client.delete_search_index(id).await?;
            ctx.output.emit(&info, |i| {
                format!(
                    "deleted {}; restorable until {} (`lattice search index restore {}`)",
                    i.id,
                    i.purge_after
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "-".into()),
                    i.id
                )
            })
        }
        IndexCommand::Restore { index } => {
            let id = index_id(client, &index).await?;
            let info = client.restore_search_index(id).await?;
            ctx.output.emit(&info, |i| format!("restored {}", i.id))
        }
        IndexCommand::Role(IndexRoleCommand::Add {
            index,
            principal: given,
            role,
        }) => {
            let id = index_id(client, &index).await?;
            let principal = principal(client, &given).await?;
            let role = client
                .add_search_index_role(
                    id,
                    &IndexRoleCreate {
                        principal: principal.to_string(),
                        role: role.into(),
                    },
                )
                .await?;
            ctx.output.emit(&role, role_line)
        }
        IndexCommand::Role(IndexRoleCommand::List { index }) => {
            let id = index_id(client, &index).await?;
            let roles = client.search_index_roles(id).await?;
            ctx.output.emit(&roles, |roles| {
                roles.iter().map(role_line).collect::<Vec<_>>().join("\n")
            })
        }
        IndexCommand::Role(IndexRoleCommand::Delete { index, role }) => {
            let id = index_id(client, &index).await?;
            client.delete_search_index_role(id, role).await?;
            ctx.output.emit(&serde_json::json!({"deleted": role}), |_| {
                format!("deleted role {role}")
            })
        }
    }
}

/// An index by id, or by display name among the indexes you have a role on.
async fn index_id(client: &Client, given: &str) -> anyhow::Result<SearchIndexId> {
    if let Ok(id) = given.parse::<SearchIndexId>() {
        return Ok(id);
    }
    let all = client.search_indexes().await?;
    Ok(one_named(
        "search index",
        given,
        &all,
        |i| i.display_name.as_str(),
        |i| i.id,
    )?)
}

/// Reads a GMetaEntry/GMetaList document, or a JSON list of entries.
fn read_ingest_file(file: &str) -> anyhow::Result<IngestDocument> {
    let text = if file == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(file)
    }
    .map_err(|e| UsageError(format!("cannot read {file}: {e}")))?;
    parse_ingest(&text).map_err(|e| UsageError(format!("{file}: {e}")).into())
}

fn parse_ingest(text: &str) -> Result<IngestDocument, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    if value.is_array() {
        let gmeta: Vec<Entry> = serde_json::from_value(value).map_err(|e| {
            format!("not a list of entries (subject, id, content, visible_to): {e}")
        })?;
        return Ok(IngestDocument::GMetaList { gmeta });
    }
    if value.get("ingest_type").is_some() {
        return serde_json::from_value(value)
            .map_err(|e| format!("not a GMetaEntry or GMetaList document: {e}"));
    }
    serde_json::from_value(value)
        .map(IngestDocument::GMetaEntry)
        .map_err(|e| format!("not an ingest document, a list of entries or an entry: {e}"))
}

/// Polls a task until it is final or `timeout` seconds passed.
async fn wait_for(
    client: &Client,
    id: SearchTaskId,
    timeout: u64,
) -> anyhow::Result<SearchTaskInfo> {
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut pause = Duration::from_millis(50);
    loop {
        let task = client.search_task(id).await?;
        if task.state.is_final() {
            return Ok(task);
        }
        if Instant::now() >= deadline {
            return Err(ExitWith {
                code: EXIT_TIMEOUT,
                message: format!(
                    "search task {id} is still {} after {timeout} s; it goes on (`lattice search task show {id}`)",
                    state_name(task.state)
                ),
            }
            .into());
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// Prints a final task; a failed one exits 6 after printing every rejected entry.
fn finish(ctx: &Context, task: &SearchTaskInfo) -> anyhow::Result<()> {
    ctx.output.emit(task, task_text)?;
    if task.state == SearchTaskState::Failed {
        for rejected in &task.rejected {
            eprintln!(
                "rejected entry {} (subject {}{}): {}",
                rejected.position,
                rejected.subject,
                rejected
                    .entry_id
                    .as_deref()
                    .map(|id| format!(", id {id}"))
                    .unwrap_or_default(),
                rejected.reason
            );
        }
        return Err(ExitWith {
            code: EXIT_TASK_FAILED,
            message: format!(
                "search task {} failed: {}",
                task.task_id,
                task.message
                    .as_deref()
                    .unwrap_or("see the rejected entries")
            ),
        }
        .into());
    }
    Ok(())
}

async fn query(ctx: &Context, client: &Client, args: QueryArgs) -> anyhow::Result<()> {
    let id = index_id(client, &args.index).await?;
    let mut filters = Vec::new();
    for text in &args.filter {
        let filter: Filter = serde_json::from_str(text)
            .map_err(|e| UsageError(format!("--filter `{text}`: {e}")))?;
        filters.push(filter);
    }
    for text in &args.matches {
        filters.push(match_filter(text)?);
    }
    let query = SearchQuery {
        q: args.q.clone(),
        mode: if args.advanced {
            QueryMode::Advanced
        } else {
            QueryMode::Simple
        },
        filters,
    };
    if args.all {
        if !args.facet.is_empty() || !args.sort.is_empty() {
            return Err(UsageError(
                "--all pages through every entry in subject order: it takes no --facet or --sort"
                    .into(),
            )
            .into());
        }
        return scroll_all(ctx, client, id, query, args.limit, args.bypass_visibility).await;
    }
    let facets = args
        .facet
        .iter()
        .map(|f| facet(f))
        .collect::<Result<Vec<_>, _>>()?;
    let sort = args.sort.iter().map(|s| sort_field(s)).collect();
    let request = SearchRequest {
        query,
        facets,
        sort,
        offset: args.offset,
        limit: Some(args.limit),
        bypass_visibility: args.bypass_visibility,
        ..Default::default()
    };
    let result = client.search_query(id, &request).await?;
    ctx.output.emit(&result, result_text)
}

/// Every page of a scroll, as one document `{count, gmeta}`.
async fn scroll_all(
    ctx: &Context,
    client: &Client,
    id: SearchIndexId,
    query: SearchQuery,
    limit: usize,
    bypass_visibility: bool,
) -> anyhow::Result<()> {
    let mut gmeta: Vec<SubjectResult> = Vec::new();
    let mut count = 0;
    let mut marker = None;
    loop {
        let page = client
            .search_scroll(
                id,
                &ScrollRequest {
                    query: query.clone(),
                    limit: Some(limit),
                    marker: marker.take(),
                    bypass_visibility,
                },
            )
            .await?;
        count += page.count;
        for subject in page.gmeta {
            // A subject's entries may straddle two pages.
            match gmeta.last_mut() {
                Some(last) if last.subject == subject.subject => {
                    last.entries.extend(subject.entries)
                }
                _ => gmeta.push(subject),
            }
        }
        match page.marker {
            Some(next) if page.has_next_page => marker = Some(next),
            _ => break,
        }
    }
    let all = serde_json::json!({"count": count, "gmeta": gmeta});
    ctx.output.emit(&all, |_| {
        let mut out: Vec<String> = gmeta.iter().map(subject_text).collect();
        out.push(format!("{count} entries"));
        out.join("\n")
    })
}

fn match_filter(text: &str) -> anyhow::Result<Filter> {
    let Some((field, value)) = text.split_once('=') else {
        return Err(UsageError(format!("--match `{text}`: expected FIELD=VALUE")).into());
    };
    let value = match serde_json::from_str::<Value>(value) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
        _ => Value::String(value.to_owned()),
    };
    Ok(Filter::MatchAny {
        field_name: field.to_owned(),
        values: vec![value],
    })
}

fn facet(text: &str) -> anyhow::Result<Facet> {
    let (field, kind) = match text.rsplit_once(':') {
        Some((field, kind)) => (field, Some(kind)),
        None => (text, None),
    };
    let kind = match kind {
        None | Some("terms") => FacetKind::Terms { size: None },
        Some("sum") => FacetKind::Sum,
        Some("avg") => FacetKind::Avg,
        Some("distinct_count") => FacetKind::DistinctCount,
        Some(other) => {
            return Err(UsageError(format!(
                "--facet `{text}`: unknown kind `{other}` (terms, sum, avg or distinct_count; histograms through the API)"
            ))
            .into())
        }
    };
    Ok(Facet {
        name: None,
        field_name: field.to_owned(),
        kind,
    })
}

fn sort_field(text: &str) -> SortField {
    match text.strip_suffix(":desc") {
        Some(field) => SortField {
            field_name: field.to_owned(),
            order: SortOrder::Desc,
        },
        None => SortField {
            field_name: text.strip_suffix(":asc").unwrap_or(text).to_owned(),
            order: SortOrder::Asc,
        },
    }
}

// ---- text output -----------------------------------------------------------

fn state_name(state: SearchTaskState) -> &'static str {
    match state {
        SearchTaskState::Pending => "pending",
        SearchTaskState::Progress => "progress",
        SearchTaskState::Success => "success",
        SearchTaskState::Failed => "failed",
    }
}

fn role_name(role: IndexRoleName) -> &'static str {
    match role {
        IndexRoleName::Writer => "writer",
        IndexRoleName::Admin => "admin",
        IndexRoleName::Owner => "owner",
    }
}

fn index_line(i: &IndexInfo) -> String {
    let status = match i.status {
        lattice_protocol::search::IndexStatus::Open => String::new(),
        lattice_protocol::search::IndexStatus::Deleted => " (deleted)".to_owned(),
    };
    format!(
        "{}  {}{}  {} entries  you: {}",
        i.id,
        i.display_name,
        status,
        i.entry_count,
        i.my_role.map(role_name).unwrap_or("-")
    )
}

fn index_text(i: &IndexInfo) -> String {
    let mut out = format!(
        "{}\n  name:        {}\n  description: {}\n  owner:       identity:{}\n  status:      {}\n  entries:     {}\n  you:         {}",
        i.id,
        i.display_name,
        i.description,
        i.owner,
        match i.purge_after {
            Some(t) => format!("deleted, restorable until {}", t.to_rfc3339()),
            None => "open".to_owned(),
        },
        i.entry_count,
        i.my_role.map(role_name).unwrap_or("-"),
    );
    if !i.fields.is_empty() {
        out.push_str("\n  fields:");
        for (name, kind) in &i.fields {
            out.push_str(&format!(
                "\n    {name}: {}",
                format!("{kind:?}").to_lowercase()
            ));
        }
    }
    out
}

fn role_line(r: &IndexRole) -> String {
    format!("{}  {}  {}", r.id, role_name(r.role), r.principal)
}

fn task_line(t: &SearchTaskInfo) -> String {
    format!(
        "{}  {:?}  {}  {}/{} applied{}",
        t.task_id,
        t.kind,
        state_name(t.state),
        t.entries_applied,
        t.entries_total,
        if t.rejected.is_empty() {
            String::new()
        } else {
            format!(", {} rejected", t.rejected.len())
        }
    )
    .to_lowercase()
}

fn task_text(t: &SearchTaskInfo) -> String {
    let mut out = format!(
        "search task {}: {} ({} of {} entries applied)",
        t.task_id,
        state_name(t.state),
        t.entries_applied,
        t.entries_total
    );
    if let Some(message) = &t.message {
        out.push_str(&format!("\n  {message}"));
    }
    for r in &t.rejected {
        out.push_str(&format!(
            "\n  rejected {} {}{}: {}",
            r.position,
            r.subject,
            r.entry_id
                .as_deref()
                .map(|id| format!(" ({id})"))
                .unwrap_or_default(),
            r.reason
        ));
    }
    out
}

/// A content value in one short line.
fn short(value: &Value) -> String {
    let text = match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

fn subject_text(s: &SubjectResult) -> String {
    let mut out = s.subject.clone();
    for entry in &s.entries {
        let fields: Vec<String> = entry
            .content
            .as_object()
            .map(|o| {
                o.iter()
                    .take(6)
                    .map(|(k, v)| format!("{k}={}", short(v)))
                    .collect()
            })
            .unwrap_or_default();
        let id = entry
            .entry_id
            .as_deref()
            .map(|id| format!("[{id}] "))
            .unwrap_or_default();
        out.push_str(&format!("\n  {id}{}", fields.join("  ")));
    }
    out
}

fn facet_text(f: &FacetResult) -> String {
    let mut out = format!("{}:", f.name);
    if let Some(value) = &f.value {
        out.push_str(&format!(" {}", short(value)));
    }
    for bucket in f.buckets.iter().flatten() {
        out.push_str(&format!(
            "\n  {:<30} {}",
            short(&bucket.value),
            bucket.count
        ));
    }
    out
}

fn result_text(r: &SearchResult) -> String {
    let mut out: Vec<String> = r.gmeta.iter().map(subject_text).collect();
    let shown = if r.count == 0 {
        "no entries".to_owned()
    } else {
        format!(
            "entries {}-{} of {}",
            r.offset + 1,
            r.offset as u64 + r.count,
            r.total
        )
    };
    out.push(format!(
        "{shown}{}",
        if r.has_next_page {
            " (more: --offset or --all)"
        } else {
            ""
        }
    ));
    out.extend(r.facet_results.iter().map(facet_text));
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_files_take_documents_lists_and_single_entries() {
        let entry = r#"{"subject": "s", "content": {"a": 1}, "visible_to": ["public"]}"#;
        assert!(matches!(
            parse_ingest(&format!("[{entry}, {entry}]")).unwrap(),
            IngestDocument::GMetaList { gmeta } if gmeta.len() == 2
        ));
        assert!(matches!(
            parse_ingest(entry).unwrap(),
            IngestDocument::GMetaEntry(_)
        ));
        let doc =
            format!(r#"{{"ingest_type": "GMetaList", "ingest_data": {{"gmeta": [{entry}]}}}}"#);
        assert!(matches!(
            parse_ingest(&doc).unwrap(),
            IngestDocument::GMetaList { .. }
        ));
        assert!(parse_ingest("{").unwrap_err().contains("not JSON"));
        assert!(parse_ingest("[1]").is_err());
    }

    #[test]
    fn match_facet_and_sort_arguments_read_as_documented() {
        let Filter::MatchAny { field_name, values } = match_filter("size=3").unwrap() else {
            panic!()
        };
        assert_eq!(
            (field_name.as_str(), &values[..]),
            ("size", &[serde_json::json!(3)][..])
        );
        let Filter::MatchAny { values, .. } = match_filter("kind=xrd").unwrap() else {
            panic!()
        };
        assert_eq!(values, [serde_json::json!("xrd")]);
        assert!(match_filter("nothing").is_err());
        assert_eq!(facet("size:sum").unwrap().kind, FacetKind::Sum);
        assert_eq!(facet("kind").unwrap().kind, FacetKind::Terms { size: None });
        assert!(facet("kind:median").is_err());
        assert_eq!(sort_field("date:desc").order, SortOrder::Desc);
        assert_eq!(sort_field("date").field_name, "date");
    }
}
