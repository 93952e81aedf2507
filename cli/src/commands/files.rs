//! `lattice collection list|show` and the file operations `lattice ls`,
//! `stat`, `mkdir`, `rename`, `rm` on `COLLECTION:PATH` arguments.

use clap::{Args, Subcommand};
use lattice_protocol::transfer::{
    CollectionInfo, DeleteItem, DeleteSubmit, EntryKind, FileEntry, ListRequest, ListResponse,
    MkdirRequest, RenameRequest, TransferStatus,
};

use crate::commands::transfers;
use crate::context::Context;
use crate::output::UsageError;

#[derive(Subcommand, Debug)]
pub(crate) enum CollectionCommand {
    /// List your collections and those shared with you, with their
    /// endpoint and status.
    List,
    /// Show one collection (id or name), with its root directory on its host.
    Show {
        /// Collection id or name.
        collection: String,
    },
    /// Roles on a collection: administrator, access-manager,
    /// activity-manager, activity-monitor.
    #[command(subcommand)]
    Role(crate::commands::sharing::RoleCommand),
    /// Every change to the collection's access rules and roles: who, when,
    /// what, from which client.
    Audit {
        /// Collection id or name.
        collection: String,
    },
    /// Share a folder: create a guest collection rooted at HOST:/path/
    /// that reaches the files with your access there. Grant others access
    /// to it with `lattice acl add NAME:/ PRINCIPAL --permissions r`.
    Share(crate::commands::sharing::ShareArgs),
    /// Delete a guest collection (its creator or administrators).
    Delete {
        /// Guest collection id or name.
        collection: String,
    },
    /// Show or change what guest collections may share of a collection:
    /// `--path /projects/=read_write --path /private/=none`.
    SharingPolicy(crate::commands::sharing::PolicyCommandArgs),
}

/// Splits `COLLECTION:PATH` (the path may be empty: the collection root).
pub(crate) fn split_target(text: &str) -> Result<(String, String), UsageError> {
    let (collection, path) = text.split_once(':').ok_or_else(|| {
        UsageError(format!(
            "`{text}`: expected COLLECTION:PATH, e.g. local:/data/run1 (list collections with `lattice collection list`)"
        ))
    })?;
    if collection.is_empty() {
        return Err(UsageError(format!(
            "`{text}`: the collection name is empty"
        )));
    }
    let path = if path.is_empty() { "/" } else { path };
    Ok((collection.to_owned(), path.to_owned()))
}

pub(crate) async fn collection(ctx: &Context, command: CollectionCommand) -> anyhow::Result<()> {
    let client = ctx.client().await?;
    match command {
        CollectionCommand::List => {
            let list = client.collections().await?;
            // Who "me" is decides which collections say whose they are.
            let me = client.whoami().await.ok().map(|w| w.identity.id);
            ctx.output.emit(&list, |list| collection_table(list, me))
        }
        CollectionCommand::Show { collection } => {
            let info = client.collection(&collection).await?;
            ctx.output.emit(&info, describe_collection)
        }
        CollectionCommand::Role(command) => crate::commands::sharing::role(ctx, command).await,
        CollectionCommand::Audit { collection } => {
            crate::commands::sharing::collection_audit(ctx, &collection).await
        }
        CollectionCommand::Share(args) => crate::commands::sharing::share(ctx, args).await,
        CollectionCommand::Delete { collection } => {
            client.delete_collection(&collection).await?;
            eprintln!("Deleted guest collection `{collection}`.");
            Ok(())
        }
        CollectionCommand::SharingPolicy(args) => {
            crate::commands::sharing::sharing_policy(ctx, args).await
        }
    }
}

fn status(online: bool) -> &'static str {
    if online {
        "online"
    } else {
        "offline"
    }
}

/// Whose a collection is and how it is reached, in a few words: a guest
/// collection names its host; someone else's names its owner.
fn provenance(c: &CollectionInfo, me: Option<lattice_protocol::IdentityId>) -> String {
    let mut words = Vec::new();
    if let Some(path) = &c.host_path {
        words.push(format!("guest collection at {path}"));
    }
    if me.is_some_and(|me| me != c.owner_id) {
        words.push(format!("shared by {}", c.owner_username));
    }
    words.join(", ")
}

fn collection_table(list: &[CollectionInfo], me: Option<lattice_protocol::IdentityId>) -> String {
    if list.is_empty() {
        return "no collections (add [[collections]] to an endpoint's config.toml, or run `lattice dev`, which hosts `local`)".into();
    }
    list.iter()
        .map(|c| {
            let line = format!(
                "{}  {:<7}  {:<20}  endpoint {}",
                c.id,
                status(c.online),
                c.name,
                c.endpoint_name
            );
            match provenance(c, me) {
                p if p.is_empty() => line,
                p => format!("{line}  ({p})"),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_collection(c: &CollectionInfo) -> String {
    let mut out = format!(
        "{}\n  name:      {}\n  owner:     {} ({})\n  status:    {}\n  endpoint:  {} ({})\n  root:      {}\n  announced: {}",
        c.id,
        c.name,
        c.owner_username,
        c.owner_id,
        status(c.online),
        c.endpoint_name,
        c.endpoint_id,
        c.root,
        c.announced_at.to_rfc3339()
    );
    if let (Some(host), Some(path)) = (c.host_collection_id, &c.host_path) {
        out.push_str(&format!("\n  guest of:  collection {host} at {path}"));
    }
    out
}

#[derive(Args, Debug)]
pub(crate) struct LsArgs {
    /// COLLECTION:PATH (an empty path lists the root).
    target: String,
    /// Show kind, permissions, size and modification time.
    #[arg(short, long)]
    long: bool,
    /// Descend into subdirectories (up to --depth levels).
    #[arg(short = 'R', long)]
    recursive: bool,
    /// Levels to list with --recursive.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=64))]
    depth: u32,
}

pub(crate) async fn ls(ctx: &Context, args: LsArgs) -> anyhow::Result<()> {
    let (collection, path) = split_target(&args.target)?;
    let client = ctx.client().await?;
    let listing = client
        .list_files(
            &collection,
            &ListRequest {
                path,
                depth: if args.recursive { args.depth } else { 1 },
                max_entries: None,
            },
        )
        .await?;
    let long = args.long;
    ctx.output.emit(&listing, |l| render_listing(l, long))
}

/// Names are printed with control characters escaped so a newline in a
/// name cannot fake another entry.
fn visible(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn render_listing(listing: &ListResponse, long: bool) -> String {
    listing
        .entries
        .iter()
        .map(|e| {
            if long {
                long_line(e)
            } else {
                let suffix = if e.kind == EntryKind::Dir { "/" } else { "" };
                format!("{}{suffix}", visible(&e.path))
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn kind_char(kind: EntryKind) -> char {
    match kind {
        EntryKind::File => '-',
        EntryKind::Dir => 'd',
        EntryKind::Symlink => 'l',
        EntryKind::Other => '?',
    }
}

fn long_line(e: &FileEntry) -> String {
    let modified = chrono::DateTime::from_timestamp_millis(e.modified_ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into());
    let mut line = format!(
        "{}{:o}  {:>5} {:>5}  {:>12}  {}  {}",
        kind_char(e.kind),
        e.permissions & 0o7777,
        e.uid,
        e.gid,
        e.size,
        modified,
        visible(&e.path)
    );
    if let Some(target) = &e.link_target {
        line.push_str(&format!(" -> {}", visible(target)));
    }
    line
}

#[derive(Args, Debug)]
pub(crate) struct StatArgs {
    /// COLLECTION:PATH
    target: String,
}

pub(crate) async fn stat(ctx: &Context, args: StatArgs) -> anyhow::Result<()> {
    let (collection, path) = split_target(&args.target)?;
    let entry = ctx.client().await?.stat(&collection, &path).await?;
    ctx.output.emit(&entry, long_line)
}

#[derive(Args, Debug)]
pub(crate) struct MkdirArgs {
    /// COLLECTION:PATH of the directory to create.
    target: String,
    /// Also create missing parents (an existing directory is then fine).
    #[arg(short, long)]
    parents: bool,
}

pub(crate) async fn mkdir(ctx: &Context, args: MkdirArgs) -> anyhow::Result<()> {
    let (collection, path) = split_target(&args.target)?;
    let entry = ctx
        .client()
        .await?
        .mkdir(
            &collection,
            &MkdirRequest {
                path,
                parents: args.parents,
            },
        )
        .await?;
    ctx.output.emit(&entry, long_line)
}

#[derive(Args, Debug)]
pub(crate) struct RenameArgs {
    /// COLLECTION:PATH to rename.
    from: String,
    /// New path in the same collection (COLLECTION:PATH or just PATH).
    to: String,
}

pub(crate) async fn rename(ctx: &Context, args: RenameArgs) -> anyhow::Result<()> {
    let (collection, from) = split_target(&args.from)?;
    let to = match args.to.split_once(':') {
        Some((other, path)) => {
            if other != collection {
                return Err(UsageError(format!(
                    "rename works within one collection: `{other}` is not `{collection}`; use `lattice transfer` to copy between collections"
                ))
                .into());
            }
            path.to_owned()
        }
        None => args.to.clone(),
    };
    let entry = ctx
        .client()
        .await?
        .rename(&collection, &RenameRequest { from, to })
        .await?;
    ctx.output.emit(&entry, long_line)
}

const RM_HELP: &str = "\
`rm` submits a delete task: the collection's agent deletes in the background,
the task pauses while the agent is offline and resumes when it returns, and
faults are retried until --deadline. By default `rm` waits for it and exits 0
when everything is deleted, 6 if the task failed or was cancelled, 7 on
--timeout (the task keeps going). Follow a task with `lattice transfer show|
events|cancel ID`.

Examples:
  lattice rm local:/runs/42/out.h5
  lattice rm --recursive local:/runs/42 local:/runs/43
  lattice rm --recursive --no-wait scratch:/old-campaign    # prints the task id";

#[derive(Args, Debug)]
#[command(after_help = RM_HELP)]
pub(crate) struct RmArgs {
    /// COLLECTION:PATH to delete (several are allowed, all in one collection).
    #[arg(required = true, value_name = "COLLECTION:PATH")]
    targets: Vec<String>,
    /// Delete directories with everything in them (otherwise only empty ones).
    #[arg(short, long)]
    recursive: bool,
    /// A path that does not exist counts as deleted instead of failing the task.
    #[arg(long)]
    ignore_missing: bool,
    /// Print the task id and return at once instead of waiting.
    #[arg(long)]
    no_wait: bool,
    /// Stop waiting after this many seconds (exit 7; the task keeps going).
    #[arg(long, value_name = "SECS", conflicts_with = "no_wait")]
    timeout: Option<u64>,
    /// A label to recognise the task by.
    #[arg(long)]
    label: Option<String>,
    /// Stop retrying at this time: RFC 3339 or a duration from now (30m, 12h).
    #[arg(long, value_name = "TIME", value_parser = crate::commands::transfers::parse_deadline)]
    deadline: Option<chrono::DateTime<chrono::Utc>>,
    /// Resubmitting with the same id returns the first task instead of a new one.
    #[arg(long, value_name = "ID")]
    submission_id: Option<String>,
}

pub(crate) async fn rm(ctx: &Context, args: RmArgs) -> anyhow::Result<()> {
    let mut collection = None;
    let mut items = Vec::new();
    for target in &args.targets {
        let (c, path) = split_target(target)?;
        match &collection {
            None => collection = Some(c),
            Some(first) if *first != c => {
                return Err(UsageError(format!(
                    "`{target}`: every path of one `rm` must be in one collection (the first is `{first}`)"
                ))
                .into())
            }
            Some(_) => {}
        }
        items.push(DeleteItem { path });
    }
    let client = ctx.client().await?;
    let task = client
        .submit_delete(&DeleteSubmit {
            collection: collection.unwrap_or_default(),
            items,
            recursive: args.recursive,
            ignore_missing: args.ignore_missing,
            label: args.label,
            deadline: args.deadline,
            submission_id: args.submission_id,
        })
        .await?;
    if args.no_wait {
        return ctx.output.emit(&task, |t| t.id.to_string());
    }
    let info = transfers::wait_final(&client, task.id, args.timeout).await?;
    if info.status == TransferStatus::Succeeded {
        ctx.output.emit(&info, |t| {
            format!(
                "deleted {} file(s) and {} director(ies)",
                t.counters.files, t.counters.directories
            )
        })
    } else {
        ctx.output.emit(&info, |t| transfers::describe(t, false))?;
        transfers::fail_unless_succeeded(&info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_split_at_the_first_colon() {
        assert_eq!(
            split_target("local:/a:b c").unwrap(),
            ("local".into(), "/a:b c".into())
        );
        assert_eq!(
            split_target("local:").unwrap(),
            ("local".into(), "/".into())
        );
        assert!(split_target("/no/collection").is_err());
        assert!(split_target(":/x").is_err());
    }

    #[test]
    fn control_characters_in_names_are_escaped() {
        assert_eq!(visible("a\nb"), "a\\nb");
        assert_eq!(visible("ü x"), "ü x");
    }
}
