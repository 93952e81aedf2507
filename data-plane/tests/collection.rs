//! Collections: confinement under hostile paths and file operations.

use std::os::unix::fs::symlink;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use lattice_data_plane::{Collection, CollectionError, EntryKind, ListOptions};

struct Fixture {
    root: tempfile::TempDir,
    outside: tempfile::TempDir,
    collection: Collection,
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret"), "OUTSIDE").unwrap();
    std::fs::create_dir(root.path().join("inside")).unwrap();
    std::fs::write(root.path().join("inside/secret"), "inside").unwrap();
    let collection = Collection::open(root.path()).unwrap();
    Fixture {
        root,
        outside,
        collection,
    }
}

#[tokio::test]
async fn parent_components_are_refused() {
    let f = fixture();
    for path in ["..", "../etc/passwd", "/inside/../../x", "inside/.."] {
        let err = f.collection.stat(path).await.unwrap_err();
        assert!(
            matches!(err, CollectionError::InvalidPath { .. }),
            "{path}: {err}"
        );
        assert!(err.to_string().contains("`..` is not allowed"), "{err}");
    }
}

#[tokio::test]
async fn absolute_paths_name_places_inside_the_root() {
    let f = fixture();
    // `/etc/passwd` is `<root>/etc/passwd`, never the host's file.
    let err = f.collection.stat("/etc/passwd").await.unwrap_err();
    assert!(matches!(err, CollectionError::NotFound { .. }), "{err}");
    assert_eq!(f.collection.stat("/inside/secret").await.unwrap().size, 6);
}

#[tokio::test]
async fn symlinks_leading_outside_are_refused() {
    let f = fixture();
    symlink(f.outside.path(), f.root.path().join("abs-link")).unwrap();
    symlink("../../../../../../../../..", f.root.path().join("rel-link")).unwrap();
    symlink(
        f.outside.path().join("secret"),
        f.root.path().join("file-link"),
    )
    .unwrap();
    symlink("inside", f.root.path().join("ok-link")).unwrap();
    for path in ["abs-link/secret", "rel-link/tmp", "abs-link"] {
        let err = f
            .collection
            .list(path, ListOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(err, CollectionError::Escape { .. }),
            "{path}: {err}"
        );
    }
    for path in ["abs-link/secret", "file-link/x"] {
        let err = f
            .collection
            .mkdir(&format!("{path}/new"), true)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                CollectionError::Escape { .. } | CollectionError::NotADirectory { .. }
            ),
            "{path}: {err}"
        );
    }
    assert!(!f.outside.path().join("secret/new").exists());
    // Renaming or deleting through an escaping link is refused too.
    let err = f
        .collection
        .rename("abs-link/secret", "stolen")
        .await
        .unwrap_err();
    assert!(matches!(err, CollectionError::Escape { .. }), "{err}");
    let err = f
        .collection
        .delete("abs-link/secret", false)
        .await
        .unwrap_err();
    assert!(matches!(err, CollectionError::Escape { .. }), "{err}");
    assert!(f.outside.path().join("secret").exists());
    // The link itself is listed (not followed) and can be deleted.
    let link = f.collection.stat("abs-link").await.unwrap();
    assert_eq!(link.kind, EntryKind::Symlink);
    f.collection.delete("abs-link", false).await.unwrap();
    assert!(f.outside.path().join("secret").exists());
    // A link that stays inside is followed.
    let entries = f
        .collection
        .list("ok-link", ListOptions::default())
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].path, "/ok-link/secret");
}

#[tokio::test]
async fn recursive_delete_does_not_follow_symlinks_out() {
    let f = fixture();
    std::fs::create_dir_all(f.root.path().join("tree/sub")).unwrap();
    std::fs::write(f.root.path().join("tree/sub/a"), "a").unwrap();
    symlink(f.outside.path(), f.root.path().join("tree/sub/out")).unwrap();
    let summary = f.collection.delete("tree", true).await.unwrap();
    assert_eq!((summary.files, summary.directories), (2, 2));
    assert!(f.outside.path().join("secret").exists());
    assert!(!f.root.path().join("tree").exists());
    let err = f.collection.delete("/", true).await.unwrap_err();
    assert!(matches!(err, CollectionError::RootOperation { .. }));
}

/// A directory is swapped for a symlink to the outside while another thread
/// keeps reading through it: every read returns inside data or an error.
#[test]
fn symlink_swapped_in_during_operations_never_escapes() {
    let f = fixture();
    let root = f.root.path().to_path_buf();
    let outside = f.outside.path().to_path_buf();
    std::fs::create_dir(root.join("real")).unwrap();
    std::fs::write(root.join("real/secret"), "inside").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut swaps = 0u32;
            while !stop.load(Ordering::Relaxed) {
                // `d` is a directory inside, then a symlink to the outside.
                let _ = std::fs::remove_file(root.join("d"));
                let _ = std::fs::rename(root.join("real"), root.join("d"));
                let _ = std::fs::rename(root.join("d"), root.join("real"));
                let _ = symlink(&outside, root.join("d"));
                swaps += 1;
            }
            swaps
        })
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut inside, mut refused) = (0, 0);
    runtime.block_on(async {
        for _ in 0..3000 {
            match f.collection.list("d/secret", ListOptions::default()).await {
                Ok(entries) => {
                    assert_eq!(entries[0].size, 6, "stat went outside: {entries:?}");
                    inside += 1;
                }
                Err(_) => refused += 1,
            }
            // Reading file contents through the collection's capability.
            if let Ok(entries) = f.collection.list("d", ListOptions::default()).await {
                for e in entries {
                    assert_ne!(e.size, 7, "read the outside file: {e:?}");
                }
            }
        }
    });
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    assert!(swaps > 10, "the race ran ({swaps} swaps)");
    assert!(
        refused > 0,
        "some reads hit the outside symlink and were refused ({inside} inside)"
    );
}

#[tokio::test]
async fn file_operations_with_awkward_names() {
    let f = fixture();
    let c = &f.collection;
    for name in ["with space", "ünïcødé ✓", "new\nline", "tab\there"] {
        let dir = format!("/ops/{name}");
        let entry = c.mkdir(&dir, true).await.unwrap();
        assert_eq!(entry.kind, EntryKind::Dir);
        assert_eq!(entry.name, name);
        std::fs::write(f.root.path().join("ops").join(name).join("file"), "12345").unwrap();
        let renamed = c
            .rename(&format!("{dir}/file"), &format!("{dir}/renamed {name}"))
            .await
            .unwrap();
        assert_eq!(renamed.size, 5);
        assert_eq!(renamed.path, format!("/ops/{name}/renamed {name}"));
    }
    let all = c
        .list(
            "/ops",
            ListOptions {
                depth: 2,
                ..ListOptions::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    let shallow = c.list("/ops", ListOptions::default()).await.unwrap();
    assert_eq!(shallow.len(), 4);
    assert!(shallow
        .iter()
        .all(|e| e.kind == EntryKind::Dir && e.permissions != 0));
    let err = c.mkdir("/ops/with space", false).await.unwrap_err();
    assert!(
        matches!(err, CollectionError::AlreadyExists { .. }),
        "{err}"
    );
    let err = c.delete("/ops", false).await.unwrap_err();
    assert!(
        matches!(err, CollectionError::DirectoryNotEmpty { .. }),
        "{err}"
    );
    let summary = c.delete("/ops", true).await.unwrap();
    assert_eq!((summary.files, summary.directories), (4, 5));
    let err = c.stat("/ops").await.unwrap_err();
    assert!(matches!(err, CollectionError::NotFound { .. }));
    // JSON shape of an entry, as the CLI's --format json will show it.
    let entry = c.stat("/inside/secret").await.unwrap();
    let json = serde_json::to_value(&entry).unwrap();
    assert_eq!(json["kind"], "file");
    assert_eq!(json["path"], "/inside/secret");
}

/// One attempt of a delete task: counts, progress updates, refusals and
/// `ignore_missing`.
#[tokio::test]
async fn delete_attempts_count_report_and_classify() {
    use lattice_data_plane::{run_delete, DeleteTask, FaultCode, TransferUpdate};
    let f = fixture();
    for d in 0..4 {
        for n in 0..50 {
            std::fs::create_dir_all(f.root.path().join(format!("big/d{d}"))).unwrap();
            std::fs::write(f.root.path().join(format!("big/d{d}/f{n}")), "x").unwrap();
        }
    }
    let task = |path: &str, recursive: bool, ignore_missing: bool| DeleteTask {
        transfer_id: "t.0".into(),
        path: path.into(),
        recursive,
        ignore_missing,
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let report = run_delete(f.collection.clone(), task("/big", true, false), Some(tx))
        .await
        .unwrap();
    assert_eq!(
        (report.counters.files, report.counters.directories),
        (200, 5)
    );
    assert!(!f.root.path().join("big").exists());
    // The last progress update has the final counts.
    let mut last = None;
    while let Ok(TransferUpdate::Progress(c)) = rx.try_recv() {
        last = Some(c);
    }
    assert_eq!(last.map(|c| (c.files, c.directories)), Some((200, 5)));

    let missing = run_delete(f.collection.clone(), task("/big", true, false), None)
        .await
        .unwrap_err();
    assert_eq!(missing.error.code, FaultCode::FileNotFound);
    assert!(!missing.error.retryable);
    let ignored = run_delete(f.collection.clone(), task("/big", true, true), None)
        .await
        .unwrap();
    assert_eq!(ignored.counters.files, 0);

    // Not recursive: an empty directory goes, a full one stays (final error).
    std::fs::create_dir(f.root.path().join("empty")).unwrap();
    let empty = run_delete(f.collection.clone(), task("empty", false, false), None)
        .await
        .unwrap();
    assert_eq!(empty.counters.directories, 1);
    let full = run_delete(f.collection.clone(), task("inside", false, false), None)
        .await
        .unwrap_err();
    assert!(!full.error.retryable, "{:?}", full.error);
    assert!(full.error.message.contains("not empty"), "{:?}", full.error);
    assert!(f.root.path().join("inside/secret").exists());

    for hostile in ["/", "..", "inside/../..", "/./"] {
        let refused = run_delete(f.collection.clone(), task(hostile, true, true), None)
            .await
            .unwrap_err();
        assert_eq!(refused.error.code, FaultCode::InvalidPath, "{hostile}");
        assert!(!refused.error.retryable, "{hostile}");
    }
    assert!(f.root.path().join("inside/secret").exists());
}

/// A stopped delete ends between two entries with `Stopped`, having counted
/// exactly what it removed, and leaves the rest for a retry.
#[test]
fn a_stopped_delete_leaves_the_rest_for_a_retry() {
    use lattice_data_plane::{CollectionPath, DeleteControl};
    const FILES: u64 = 20_000;
    let f = fixture();
    std::fs::create_dir_all(f.root.path().join("tree")).unwrap();
    for n in 0..FILES {
        std::fs::write(f.root.path().join(format!("tree/f{n}")), "x").unwrap();
    }
    let path = CollectionPath::parse("tree").unwrap();
    let control = Arc::new(DeleteControl::default());
    let stopper = {
        let control = control.clone();
        std::thread::spawn(move || {
            while control.summary().files < 100 {
                std::hint::spin_loop();
            }
            control.stop();
        })
    };
    let err = f
        .collection
        .delete_blocking(&path, true, &control)
        .unwrap_err();
    stopper.join().unwrap();
    assert!(matches!(err, CollectionError::Stopped), "{err}");
    let removed = control.summary().files;
    let left = std::fs::read_dir(f.root.path().join("tree"))
        .unwrap()
        .count() as u64;
    assert!(removed >= 100 && left > 0, "removed {removed}, left {left}");
    assert_eq!(removed + left, FILES);
    let retry = DeleteControl::default();
    let summary = f.collection.delete_blocking(&path, true, &retry).unwrap();
    assert_eq!((summary.files, summary.directories), (left, 1));
    assert!(!f.root.path().join("tree").exists());
}

#[tokio::test]
async fn a_rename_names_the_missing_side() {
    let f = fixture();
    let c = &f.collection;
    let err = c.rename("/inside/nope", "/inside/other").await.unwrap_err();
    assert!(
        matches!(&err, CollectionError::NotFound { path } if path == "/inside/nope"),
        "{err}"
    );
    let err = c
        .rename("/inside/secret", "/no/such/dir/secret")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CollectionError::NotFound { path } if path == "/no/such/dir"),
        "{err}"
    );
}
