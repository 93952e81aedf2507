//! `lattice collection list|show` and the file operations `lattice ls`,
//! `stat`, `mkdir`, `rename`, `rm` on `COLLECTION:PATH` arguments.

use clap::{Args, Subcommand};
use lattice_protocol::transfer::{
    CollectionInfo, DeleteRequest, EntryKind, FileEntry, ListRequest, ListResponse, MkdirRequest,
    RenameRequest,
};

use crate::context::Context;
use crate::output::UsageError;

#[derive(Subcommand, Debug)]
pub(crate) enum CollectionCommand {
    /// List your collections with their endpoint and status.
    List,
    /// Show one collection (id or name), with its root directory on its host.
    Show { collection: String },
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
            ctx.output.emit(&list, |list| collection_table(list))
        }
        CollectionCommand::Show { collection } => {
            let info = client.collection(&collection).await?;
            ctx.output.emit(&info, describe_collection)
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

fn collection_table(list: &[CollectionInfo]) -> String {
    if list.is_empty() {
        return "no collections (add [[collections]] to an endpoint's config.toml, or run `lattice dev`, which hosts `local`)".into();
    }
    list.iter()
        .map(|c| {
            format!(
                "{}  {:<7}  {:<20}  endpoint {}",
                c.id,
                status(c.online),
                c.name,
                c.endpoint_name
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn describe_collection(c: &CollectionInfo) -> String {
    format!(
        "{}\n  name:      {}\n  status:    {}\n  endpoint:  {} ({})\n  root:      {}\n  announced: {}",
        c.id,
        c.name,
        status(c.online),
        c.endpoint_name,
        c.endpoint_id,
        c.root,
        c.announced_at.to_rfc3339()
    )
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

#[derive(Args, Debug)]
pub(crate) struct RmArgs {
    /// COLLECTION:PATH to delete.
    target: String,
    /// Delete a directory and everything in it.
    #[arg(short, long)]
    recursive: bool,
}

pub(crate) async fn rm(ctx: &Context, args: RmArgs) -> anyhow::Result<()> {
    let (collection, path) = split_target(&args.target)?;
    let summary = ctx
        .client()
        .await?
        .delete_path(
            &collection,
            &DeleteRequest {
                path,
                recursive: args.recursive,
            },
        )
        .await?;
    ctx.output.emit(&summary, |s| {
        format!(
            "deleted {} file(s) and {} director(ies)",
            s.files, s.directories
        )
    })
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
