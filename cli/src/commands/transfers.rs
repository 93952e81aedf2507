//! `lattice transfer SRC DST` (submit) and `lattice transfer
//! show|list|cancel|wait|events ID`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use lattice_client::Client;
use lattice_protocol::transfer::{
    SyncLevel, TaskKind, TransferEventInfo, TransferInfo, TransferItem, TransferOptions,
    TransferStatus, TransferSubmit, TransferTuning,
};
use lattice_protocol::TransferId;

use crate::commands::files::split_target;
use crate::commands::tasks::{ExitWith, EXIT_TASK_FAILED, EXIT_TIMEOUT};
use crate::context::Context;
use crate::output::{id_of, UsageError};

/// How often `wait` polls.
const POLL: Duration = Duration::from_millis(500);

const TRANSFER_HELP: &str = "\
Examples:
  lattice transfer laptop:/data/run1 hpc:/scratch/run1 --recursive
  lattice transfer laptop:/big.h5 hpc:/in/big.h5 --sync-level checksum --label nightly
  lattice transfer --batch pairs.txt                 # `SRC DST` or `--recursive SRC DST` a line
  lattice transfer wait ID --timeout 3600

The service retries faults (dropped connections, checksum mismatches, a full
disk unless --fail-on-quota) with backoff until the transfer succeeds, is
cancelled or passes its --deadline; an endpoint going offline pauses the task
and it resumes when the endpoint returns. Every file is verified with blake3
on both sides.";

/// One end of a transfer `--notify-on` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum NotifyOn {
    /// It succeeded.
    Succeeded,
    /// It failed.
    Failed,
    /// It paused (an endpoint offline).
    Inactive,
    /// Never tell me.
    None,
}

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true, after_help = TRANSFER_HELP)]
pub(crate) struct TransferArgs {
    #[command(subcommand)]
    command: Option<TransferCommand>,
    #[command(flatten)]
    submit: SubmitArgs,
}

#[derive(Subcommand, Debug)]
pub(crate) enum TransferCommand {
    /// Show a transfer (status, counters, the checksum of every file) or a
    /// delete task (`lattice rm`).
    Show {
        /// Transfer or delete task id.
        #[arg(value_parser = id_of::<TransferId>("transfer", "`lattice transfer list`"))]
        id: TransferId,
    },
    /// List your transfers and delete tasks, newest first.
    List {
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Cancel a transfer or delete task that is still running or paused.
    Cancel {
        /// Transfer or delete task id.
        #[arg(value_parser = id_of::<TransferId>("transfer", "`lattice transfer list`"))]
        id: TransferId,
    },
    /// Wait until a transfer is final; exit 0 if it succeeded, 6 if it failed
    /// or was cancelled, 7 on --timeout (the transfer keeps going).
    Wait {
        /// Transfer or delete task id.
        #[arg(value_parser = id_of::<TransferId>("transfer", "`lattice transfer list`"))]
        id: TransferId,
        /// Give up after this many seconds.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
    },
    /// Faults and status changes of a transfer, oldest first.
    Events {
        /// Transfer or delete task id.
        #[arg(value_parser = id_of::<TransferId>("transfer", "`lattice transfer list`"))]
        id: TransferId,
    },
}

#[derive(Args, Debug)]
pub(crate) struct SubmitArgs {
    /// Source: COLLECTION:PATH.
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    source: Option<String>,
    /// Destination: COLLECTION:PATH (for --recursive, the directory the
    /// source directory's contents go into; else the file's path).
    #[arg(required_unless_present = "batch", conflicts_with = "batch")]
    destination: Option<String>,
    /// Read `SRC DST` pairs from FILE, one a line (`#` comments; quote a
    /// path with spaces in double quotes; `--recursive` or `-r` on a line
    /// makes that pair recursive, --recursive on the command line all
    /// pairs); all sources in one collection, all destinations in one
    /// collection.
    #[arg(long, value_name = "FILE")]
    batch: Option<PathBuf>,
    /// Copy directories with everything in them.
    #[arg(short, long)]
    recursive: bool,
    /// Skip destination files that are already up to date: exists, size,
    /// mtime (same size, not older) or checksum (same blake3).
    #[arg(long, value_name = "LEVEL", value_parser = parse_sync_level)]
    sync_level: Option<SyncLevel>,
    /// Give destination files the source's modification time.
    #[arg(long)]
    preserve_mtime: bool,
    /// Delete destination files and directories the source does not have
    /// (recursive transfers; excluded paths are kept).
    #[arg(long)]
    delete: bool,
    /// Skip source files that vanish or cannot be read (recorded as events)
    /// instead of failing the transfer.
    #[arg(long)]
    skip_source_errors: bool,
    /// Fail the transfer when the destination is full instead of retrying.
    #[arg(long)]
    fail_on_quota: bool,
    /// Only transfer files matching this glob (repeatable; a glob without
    /// `/` matches the file name, with `/` the path under the source).
    #[arg(long, value_name = "GLOB")]
    include: Vec<String>,
    /// Leave out files and directories matching this glob (repeatable).
    #[arg(long, value_name = "GLOB")]
    exclude: Vec<String>,
    /// Do not compare blake3 checksums (on by default).
    #[arg(long)]
    no_verify: bool,
    /// A label to recognise the transfer by.
    #[arg(long)]
    label: Option<String>,
    /// Stop retrying at this time: RFC 3339 (2026-11-24T08:00:00Z) or a
    /// duration from now (90s, 30m, 12h, 2d).
    #[arg(long, value_name = "TIME", value_parser = parse_deadline)]
    pub(crate) deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// Resubmitting with the same id returns the first transfer instead of
    /// starting another (safe retries of the submission itself).
    #[arg(long, value_name = "ID")]
    pub(crate) submission_id: Option<String>,
    /// Which ends of the transfer to be told about (by your notification
    /// preferences: `lattice notify prefs`), comma-separated; `none` for none.
    #[arg(
        long,
        value_name = "WHEN",
        value_enum,
        value_delimiter = ',',
        default_values = ["succeeded", "failed", "inactive"]
    )]
    notify_on: Vec<NotifyOn>,
    /// QUIC connections between the two agents, 1-16 [default: 2]. Raise it
    /// on a long fat link, where one congestion window limits throughput.
    #[arg(long, value_name = "N", help_heading = "Tuning")]
    connections: Option<u32>,
    /// Concurrent streams per connection, 1-64 [default: 4].
    #[arg(long, value_name = "N", help_heading = "Tuning")]
    streams: Option<u32>,
    /// Chunk size of large files, the unit sent in parallel, verified and
    /// kept across restarts: a power of two from 64KiB to 1GiB, e.g. 1MiB,
    /// 64MiB [default: 8MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_chunk_size, help_heading = "Tuning")]
    chunk_size: Option<u64>,
}

/// `65536`, `64KiB`, `8MiB`, `1GiB` (also `K`, `M`, `G`, binary units).
fn parse_chunk_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        _ => {
            return Err(format!(
                "`{text}`: expected bytes or a size like 64KiB, 8MiB, 1GiB"
            ))
        }
    };
    let size = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(|| format!("`{text}`: expected bytes or a size like 64KiB, 8MiB, 1GiB"))?;
    TransferTuning {
        chunk_size: Some(size),
        ..Default::default()
    }
    .validate()
    .map_err(|_| format!("`{text}`: a chunk size is a power of two from 64KiB to 1GiB"))?;
    Ok(size)
}

fn parse_sync_level(text: &str) -> Result<SyncLevel, String> {
    text.parse()
}

pub(crate) fn parse_deadline(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
    let n: i64 = number
        .parse()
        .map_err(|_| format!("`{text}`: expected RFC 3339 or a duration like 30m"))?;
    let seconds = match unit {
        "s" | "" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("`{text}`: duration units are s, m, h, d")),
    };
    Ok(chrono::Utc::now() + chrono::Duration::seconds(seconds))
}

/// Splits a batch line into tokens; double quotes group a token with spaces.
fn tokens(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut token = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c == '"' {
                quoted = !quoted;
                chars.next();
            } else if c.is_whitespace() && !quoted {
                break;
            } else {
                token.push(c);
                chars.next();
            }
        }
        if quoted {
            return Err("unterminated quote".into());
        }
        out.push(token);
    }
    Ok(out)
}

/// The (source collection, destination collection, items) of a batch file.
fn parse_batch(text: &str, recursive: bool) -> Result<(String, String, Vec<TransferItem>), String> {
    let mut collections: Option<(String, String)> = None;
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = |e: String| format!("line {}: {e}", n + 1);
        let mut parts = tokens(line).map_err(at)?;
        let before = parts.len();
        parts.retain(|t| t != "--recursive" && t != "-r");
        let line_recursive = parts.len() < before;
        let [source, destination] = parts.as_slice() else {
            return Err(at(format!(
                "expected `[--recursive] SRC_COLLECTION:PATH DST_COLLECTION:PATH`, got {} path(s)",
                parts.len()
            )));
        };
        let (sc, sp) = split_target(source).map_err(|e| at(e.0))?;
        let (dc, dp) = split_target(destination).map_err(|e| at(e.0))?;
        match &collections {
            None => collections = Some((sc, dc)),
            Some((s, d)) if *s == sc && *d == dc => {}
            Some((s, d)) => {
                return Err(at(format!(
                "all pairs must go from `{s}` to `{d}` (one transfer is between two collections)"
            )))
            }
        }
        items.push(TransferItem {
            source_path: sp,
            destination_path: dp,
            recursive: recursive || line_recursive,
        });
    }
    let (source, destination) = collections.ok_or("the batch file has no pairs")?;
    Ok((source, destination, items))
}

pub(crate) async fn run(ctx: &Context, args: TransferArgs) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match args.command {
        None => submit(ctx, &client, args.submit).await,
        Some(TransferCommand::Show { id }) => {
            let info = client.transfer(id).await?;
            ctx.output.emit(&info, |t| describe(t, true))
        }
        Some(TransferCommand::List { limit }) => {
            let list = client.transfers(Some(limit)).await?;
            ctx.output.emit(&list, |l| table(l))
        }
        Some(TransferCommand::Cancel { id }) => {
            let info = client.cancel_transfer(id).await?;
            ctx.output.emit(&info, |t| describe(t, false))
        }
        Some(TransferCommand::Events { id }) => {
            let events = client.transfer_events(id, 0).await?;
            ctx.output.emit(&events, |e| render_events(e))
        }
        Some(TransferCommand::Wait { id, timeout }) => {
            let info = wait_final(&client, id, timeout).await?;
            ctx.output.emit(&info, |t| describe(t, false))?;
            fail_unless_succeeded(&info)
        }
    }
}

/// Polls a task (transfer or delete) until it is final; exit 7 after
/// `timeout` seconds.
pub(crate) async fn wait_final(
    client: &Client,
    id: TransferId,
    timeout: Option<u64>,
) -> anyhow::Result<TransferInfo> {
    let work = async {
        loop {
            let info = client.transfer(id).await?;
            if info.status.is_final() {
                return Ok::<_, anyhow::Error>(info);
            }
            tokio::time::sleep(POLL).await;
        }
    };
    match timeout {
        None => work.await,
        Some(secs) => tokio::time::timeout(Duration::from_secs(secs), work)
            .await
            .map_err(|_| ExitWith {
                code: EXIT_TIMEOUT,
                message: format!(
                    "task {id} is not finished after {secs} s; it keeps going (`lattice transfer show {id}`)"
                ),
            })?,
    }
}

/// Exit 6 with the task's status message unless it succeeded.
pub(crate) fn fail_unless_succeeded(info: &TransferInfo) -> anyhow::Result<()> {
    if info.status == TransferStatus::Succeeded {
        return Ok(());
    }
    Err(ExitWith {
        code: EXIT_TASK_FAILED,
        message: format!(
            "{} {} {}: {}",
            kind_name(info.kind),
            info.id,
            info.status.as_str(),
            info.status_message.as_deref().unwrap_or("")
        ),
    }
    .into())
}

fn kind_name(kind: TaskKind) -> &'static str {
    match kind {
        TaskKind::Transfer => "transfer",
        TaskKind::Delete { .. } => "delete",
    }
}

async fn submit(ctx: &Context, client: &Client, args: SubmitArgs) -> anyhow::Result<()> {
    let request = submission(args)?;
    let info = client.submit_transfer(&request).await?;
    ctx.output.emit(&info, |t| t.id.to_string())
}

/// The transfer document the arguments describe (also what a transfer
/// timer starts at every tick).
pub(crate) fn submission(args: SubmitArgs) -> anyhow::Result<TransferSubmit> {
    let (source_collection, destination_collection, items) = match &args.batch {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the batch file {}", path.display()))?;
            parse_batch(&text, args.recursive)
                .map_err(|e| UsageError(format!("{}: {e}", path.display())))?
        }
        None => {
            let (Some(source), Some(destination)) = (&args.source, &args.destination) else {
                return Err(UsageError("give SRC and DST, or --batch FILE".into()).into());
            };
            let (sc, sp) = split_target(source)?;
            let (dc, dp) = split_target(destination)?;
            (
                sc,
                dc,
                vec![TransferItem {
                    source_path: sp,
                    destination_path: dp,
                    recursive: args.recursive,
                }],
            )
        }
    };
    let tuning = TransferTuning {
        connections: args.connections,
        streams_per_connection: args.streams,
        chunk_size: args.chunk_size,
    };
    tuning.validate().map_err(|e| {
        UsageError(
            e.replace("tuning.streams_per_connection", "--streams")
                .replace("tuning.connections", "--connections"),
        )
    })?;
    let request = TransferSubmit {
        source_collection,
        destination_collection,
        items,
        options: TransferOptions {
            sync_level: args.sync_level,
            verify_checksum: !args.no_verify,
            preserve_mtime: args.preserve_mtime,
            delete_extraneous: args.delete,
            skip_source_errors: args.skip_source_errors,
            fail_on_quota: args.fail_on_quota,
            include: args.include,
            exclude: args.exclude,
        },
        tuning,
        label: args.label,
        deadline: args.deadline,
        submission_id: args.submission_id,
        notify_on_succeeded: args.notify_on.contains(&NotifyOn::Succeeded),
        notify_on_failed: args.notify_on.contains(&NotifyOn::Failed),
        notify_on_inactive: args.notify_on.contains(&NotifyOn::Inactive),
    };
    Ok(request)
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub(crate) fn describe(t: &TransferInfo, checksums: bool) -> String {
    let c = &t.counters;
    let mut text = if let TaskKind::Delete { ignore_missing } = t.kind {
        format!(
            "{} (delete)\n  status:       {}\n  collection:   {}\n  paths:        {} of {} done{}\n  removed:      {} file(s), {} directory(ies)\n  faults:       {}\n  attempts:     {}",
            t.id,
            t.status.as_str(),
            t.source_collection_name,
            t.items_done,
            t.items.len(),
            if ignore_missing { " (missing paths ignored)" } else { "" },
            c.files,
            c.directories,
            c.faults,
            t.attempts,
        )
    } else {
        format!(
        "{}\n  status:       {}\n  from:         {}\n  to:           {}\n  items:        {} of {} done\n  files:        {} transferred, {} skipped, {} resumed ({} found)\n  directories:  {}\n  bytes:        {} transferred, {} verified ({} found)\n  faults:       {}\n  attempts:     {}\n  rate:         {}/s effective",
        t.id,
        t.status.as_str(),
        t.source_collection_name,
        t.destination_collection_name,
        t.items_done,
        t.items.len(),
        c.files,
        c.files_skipped,
        c.files_resumed,
        c.files_total,
        c.directories,
        human_bytes(c.bytes_transferred),
        human_bytes(c.bytes_verified),
        human_bytes(c.bytes_total),
        c.faults,
        t.attempts,
        human_bytes(t.effective_bytes_per_second),
        )
    };
    if let Some(label) = &t.label {
        text.push_str(&format!("\n  label:        {label}"));
    }
    if let Some(deadline) = &t.deadline {
        text.push_str(&format!("\n  deadline:     {}", deadline.to_rfc3339()));
    }
    if !t.tuning.is_default() {
        let mut parts = Vec::new();
        if let Some(n) = t.tuning.connections {
            parts.push(format!("{n} connection(s)"));
        }
        if let Some(n) = t.tuning.streams_per_connection {
            parts.push(format!("{n} stream(s) each"));
        }
        if let Some(size) = t.tuning.chunk_size {
            parts.push(format!("{} chunks", human_bytes(size)));
        }
        text.push_str(&format!("\n  tuning:       {}", parts.join(", ")));
    }
    text.push_str(&format!(
        "\n  submitted:    {}",
        t.submitted_at.to_rfc3339()
    ));
    if let Some(done) = &t.completed_at {
        text.push_str(&format!("\n  completed:    {}", done.to_rfc3339()));
    }
    if let Some(message) = &t.status_message {
        text.push_str(&format!("\n  message:      {message}"));
    }
    if checksums && !t.checksums.is_empty() {
        text.push_str("\n  checksums (blake3):");
        for sum in &t.checksums {
            let path = if sum.path.is_empty() { "." } else { &sum.path };
            text.push_str(&format!("\n    {}  {}", sum.blake3, path.escape_debug()));
        }
    }
    text
}

fn table(list: &[TransferInfo]) -> String {
    if list.is_empty() {
        return "no transfers".into();
    }
    list.iter()
        .map(|t| {
            if let TaskKind::Delete { .. } = t.kind {
                return format!(
                    "{}  {:<9}  delete in {}  {} files  {} dirs{}",
                    t.id,
                    t.status.as_str(),
                    t.source_collection_name,
                    t.counters.files,
                    t.counters.directories,
                    t.label
                        .as_deref()
                        .map(|l| format!("  [{l}]"))
                        .unwrap_or_default()
                );
            }
            format!(
                "{}  {:<9}  {} -> {}  {} files  {}{}",
                t.id,
                t.status.as_str(),
                t.source_collection_name,
                t.destination_collection_name,
                t.counters.files,
                human_bytes(t.counters.bytes_transferred),
                t.label
                    .as_deref()
                    .map(|l| format!("  [{l}]"))
                    .unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn render_events(events: &[TransferEventInfo]) -> String {
    if events.is_empty() {
        return "no events".into();
    }
    events
        .iter()
        .map(|e| {
            let mut line = format!(
                "{}  {:<18} item {} attempt {}",
                e.time.format("%Y-%m-%d %H:%M:%S%.3f"),
                e.code,
                // Counted from 1 like attempts (`item` in JSON is the index).
                e.item + 1,
                e.attempt
            );
            if let Some(side) = e.side {
                line.push_str(&format!(" ({side:?})").to_lowercase());
            }
            if let Some(path) = &e.path {
                line.push_str(&format!("  {}", path.escape_debug()));
            }
            line.push_str(&format!("  {}", e.message));
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_files_parse_pairs_with_quotes_and_comments() {
        let text = "# pairs\nsrc:/a dst:/b\n\n\"src:/with space\" \"dst:/x y\"\n";
        let (s, d, items) = parse_batch(text, true).unwrap();
        assert_eq!((s.as_str(), d.as_str()), ("src", "dst"));
        assert_eq!(items.len(), 2);
        assert_eq!(items[1].source_path, "/with space");
        assert!(items[1].recursive);
        let (_, _, items) = parse_batch(
            "src:/a dst:/b\n-r src:/c dst:/d\nsrc:/e dst:/f --recursive\n",
            false,
        )
        .unwrap();
        let recursive: Vec<bool> = items.iter().map(|i| i.recursive).collect();
        assert_eq!(recursive, [false, true, true]);
        assert!(parse_batch("src:/a other:/b\nsrc:/c dst:/d\n", false).is_err());
        assert!(parse_batch("src:/a\n", false).is_err());
        assert!(parse_batch("# nothing\n", false).is_err());
    }

    #[test]
    fn chunk_sizes_take_binary_units() {
        assert_eq!(parse_chunk_size("65536"), Ok(64 << 10));
        assert_eq!(parse_chunk_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_chunk_size("8MiB"), Ok(8 << 20));
        assert_eq!(parse_chunk_size("1m"), Ok(1 << 20));
        assert_eq!(parse_chunk_size("1GiB"), Ok(1 << 30));
        for bad in [
            "3MiB",
            "32KiB",
            "2GiB",
            "8 XB",
            "MiB",
            "",
            "99999999999999999999G",
        ] {
            let error = parse_chunk_size(bad).unwrap_err();
            assert!(error.contains(&format!("`{bad}`")), "{bad}: {error}");
        }
    }

    #[test]
    fn deadlines_are_rfc3339_or_durations() {
        assert!(parse_deadline("2030-01-01T00:00:00Z").is_ok());
        let in_an_hour = parse_deadline("1h").unwrap();
        let delta = in_an_hour - chrono::Utc::now();
        assert!(delta > chrono::Duration::minutes(59) && delta <= chrono::Duration::hours(1));
        assert!(parse_deadline("soon").is_err());
        assert!(parse_deadline("5y").is_err());
    }
}
