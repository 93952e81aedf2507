//! End to end through the real `lattice` binary: `lattice dev` hosts the
//! `local` collection, a separate `lattice agent --collection remote=DIR`
//! process hosts `remote`, and data goes agent to agent over QUIC. Covers
//! the CLI's collection, file and transfer commands, and the faults: the
//! destination agent killed (SIGKILL) mid-file and restarted, a missing
//! source, an offline destination, cancel, and idempotent resubmission.

use std::io::Read;
use std::path::Path;
use std::time::{Duration, Instant};

use lattice_client::Client;
use lattice_protocol::transfer::{TransferInfo, TransferStatus};
use lattice_protocol::TransferId;
use lattice_tests::platform::succeeded as ok;
use lattice_tests::platform::{AgentProcess, DevOptions, DevPlatform};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");
/// Hang guard for anything that waits.
const PATIENCE: Duration = Duration::from_secs(120);
/// The file cut mid-transfer.
const BIG: usize = 384 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// Same bytes, compared a piece at a time.
fn same_file(a: &Path, b: &Path) -> bool {
    let (Ok(mut a), Ok(mut b)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = a.read(&mut x).unwrap();
        let m = b.read_exact(&mut y[..n]).map(|_| n);
        if m.is_err() {
            return false;
        }
        if x[..n] != y[..n] {
            return false;
        }
        if n == 0 {
            return b.read(&mut y).unwrap() == 0;
        }
    }
}

fn tree(root: &Path) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                out.push((rel, None));
                stack.push(path);
            } else {
                out.push((rel, Some(std::fs::read(&path).unwrap())));
            }
        }
    }
    out.sort();
    out
}

async fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(v) = probe() {
            return v;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn online(client: &Client, collection: &str, want: bool) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Ok(c) = client.collection(collection).await {
            if c.online == want {
                return;
            }
        }
        assert!(
            Instant::now() < deadline,
            "collection {collection} never became online={want}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn transfer(client: &Client, id: TransferId) -> TransferInfo {
    client.transfer(id).await.unwrap()
}

fn submit(platform: &DevPlatform, args: &[&str]) -> TransferId {
    let mut all = vec!["transfer"];
    all.extend_from_slice(args);
    ok(platform.cli(&all))
        .trim()
        .parse()
        .expect("a transfer id")
}

struct Scene {
    platform: DevPlatform,
    remote: AgentProcess,
    remote_root: tempfile::TempDir,
    client: Client,
}

async fn scene() -> Scene {
    let platform = DevPlatform::start(
        LATTICE.as_ref(),
        DevOptions {
            local_workers: Some(0),
            ..Default::default()
        },
    );
    let remote_root = tempfile::tempdir().unwrap();
    let remote = platform.agent_with_collection("remote", remote_root.path());
    let client = platform.client();
    online(&client, "local", true).await;
    online(&client, "remote", true).await;
    Scene {
        platform,
        remote,
        remote_root,
        client,
    }
}

#[test]
fn collections_and_file_operations_through_the_cli() {
    runtime().block_on(async {
        let s = scene().await;
        let local = s.platform.local_collection_root();
        let list = ok(s.platform.cli(&["collection", "list"]));
        assert!(list.contains("local") && list.contains("remote"), "{list}");
        let show = ok(s.platform.cli(&["collection", "show", "remote"]));
        assert!(
            show.contains(&s.remote_root.path().display().to_string()),
            "{show}"
        );

        ok(s.platform.cli(&["mkdir", "--parents", "local:/a b/ünï"]));
        write(&local.join("a b/ünï/file"), b"12345");
        let ls = ok(s.platform.cli(&["ls", "--recursive", "--long", "local:"]));
        assert!(ls.contains("/a b/ünï/file"), "{ls}");
        let stat = ok(s
            .platform
            .cli(&["stat", "--format", "json", "local:/a b/ünï/file"]));
        let stat: serde_json::Value = serde_json::from_str(&stat).unwrap();
        assert_eq!(stat["size"], 5);
        ok(s.platform
            .cli(&["rename", "local:/a b/ünï/file", "local:/moved"]));
        assert_eq!(std::fs::read(local.join("moved")).unwrap(), b"12345");
        // A rename that cannot happen names the missing side (exit 4).
        for (from, to, missing) in [
            ("local:/nope", "local:/x", "/nope"),
            ("local:/moved", "local:/no/such/dir/x", "/no/such/dir"),
        ] {
            let refused = s.platform.cli(&["rename", from, to]);
            assert_eq!(refused.status.code(), Some(4), "{refused:?}");
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(stderr.contains(missing), "{stderr}");
        }
        let removed = ok(s.platform.cli(&["rm", "-r", "local:/a b"]));
        assert!(!local.join("a b").exists());
        assert!(
            removed.contains("deleted 0 file(s) and 2 director(ies)"),
            "{removed}"
        );

        // `rm` is a delete task: a missing path fails it (exit 6) unless
        // --ignore-missing; --no-wait prints the task id.
        let missing = s.platform.cli(&["rm", "local:/not there"]);
        assert_eq!(missing.status.code(), Some(6), "{missing:?}");
        assert!(
            String::from_utf8_lossy(&missing.stderr).contains("FILE_NOT_FOUND"),
            "{missing:?}"
        );
        ok(s.platform
            .cli(&["rm", "--ignore-missing", "local:/not there"]));
        write(&local.join("later/x"), b"x");
        write(&local.join("also"), b"y");
        let id = ok(s
            .platform
            .cli(&["rm", "-r", "--no-wait", "local:/later", "local:/also"]));
        ok(s.platform
            .cli(&["transfer", "wait", id.trim(), "--timeout", "60"]));
        let shown = ok(s.platform.cli(&["transfer", "show", id.trim()]));
        assert!(
            shown.contains("(delete)") && shown.contains("2 file(s), 1 directory"),
            "{shown}"
        );
        assert!(!local.join("later").exists() && !local.join("also").exists());
        let mixed = s.platform.cli(&["rm", "local:/a", "remote:/b"]);
        assert_eq!(mixed.status.code(), Some(2), "{mixed:?}");

        // Refusals are exit code 4 with the service's message.
        let hostile = s.platform.cli(&["ls", "local:../"]);
        assert_eq!(hostile.status.code(), Some(4), "{hostile:?}");
        assert!(String::from_utf8_lossy(&hostile.stderr).contains("not allowed"));
        let unknown = s.platform.cli(&["ls", "nowhere:/"]);
        assert_eq!(unknown.status.code(), Some(4), "{unknown:?}");
        let usage = s.platform.cli(&["ls", "no-colon"]);
        assert_eq!(usage.status.code(), Some(2), "{usage:?}");
    });
}

#[test]
fn transfers_within_one_agent() {
    runtime().block_on(async {
        let s = scene().await;
        let local = s.platform.local_collection_root();
        write(&local.join("in/a.txt"), b"alpha");
        write(&local.join("in/sub/b.bin"), &pattern(3 << 20, 2));

        // One agent is both sides: its source and destination attempts run
        // side by side (one used to replace the other: AUTH_FAILED).
        let id = submit(&s.platform, &["local:/in", "local:/out", "--recursive"]);
        ok(s.platform
            .cli(&["transfer", "wait", &id.to_string(), "--timeout", "60"]));
        assert_eq!(tree(&local.join("in")), tree(&local.join("out")));
        let done = transfer(&s.client, id).await;
        assert_eq!((done.counters.files, done.attempts), (2, 1), "{done:?}");

        // A tree into itself, a path onto itself, and a delete that would
        // remove its own source are refused up front (exit 4), naming why.
        for (args, says) in [
            (
                &["local:/in", "local:/in/copy", "-r"][..],
                "copied into itself",
            ),
            (
                &["local:/in/a.txt", "local:/in/a.txt"][..],
                "are the same path",
            ),
            (
                &["local:/in/sub", "local:/in", "-r", "--delete"][..],
                "would delete the source",
            ),
        ] {
            let mut all = vec!["transfer"];
            all.extend_from_slice(args);
            let refused = s.platform.cli(&all);
            assert_eq!(refused.status.code(), Some(4), "{args:?}: {refused:?}");
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
        assert!(!local.join("in/copy").exists());
        assert_eq!(std::fs::read(local.join("in/a.txt")).unwrap(), b"alpha");
    });
}

#[test]
fn transfers_resume_after_the_destination_agent_is_killed() {
    runtime().block_on(async {
        let mut s = scene().await;
        let local = s.platform.local_collection_root();
        let remote = s.remote_root.path().to_owned();

        // A tree with awkward names arrives byte-identical.
        write(&local.join("tree/a.txt"), b"alpha");
        write(&local.join("tree/dir with space/ünïcødé"), b"unicode");
        write(&local.join("tree/dir with space/new\nline"), b"newline");
        write(&local.join("tree/one.bin"), &pattern(3 << 20, 1));
        let id = submit(
            &s.platform,
            &["local:/tree", "remote:/copy", "--recursive", "--label", "tree",
              "--connections", "1", "--streams", "2", "--chunk-size", "1MiB"],
        );
        ok(s.platform.cli(&["transfer", "wait", &id.to_string(), "--timeout", "120"]));
        assert_eq!(tree(&local.join("tree")), tree(&remote.join("copy")));
        let shown = ok(s.platform.cli(&["transfer", "show", &id.to_string()]));
        assert!(shown.contains("succeeded") && shown.contains("checksums"), "{shown}");
        assert!(
            shown.contains("tuning:       1 connection(s), 2 stream(s) each, 1.0 MiB chunks"),
            "{shown}"
        );
        for (flag, value, says) in [
            ("--chunk-size", "3MiB", "power of two"),
            ("--connections", "0", "--connections must be 1 to 16"),
            ("--streams", "100", "--streams must be 1 to 64"),
        ] {
            let refused = s.platform.cli(&["transfer", "local:/tree", "remote:/x", "-r", flag, value]);
            assert_eq!(refused.status.code(), Some(2), "{flag} {value}: {refused:?}");
            let stderr = String::from_utf8_lossy(&refused.stderr);
            assert!(stderr.contains(says), "{flag} {value}: {stderr}");
        }

        // A large file: SIGKILL the destination agent mid-file, restart it.
        write(&local.join("big.bin"), &pattern(BIG, 7));
        let started = Instant::now();
        let id = submit(&s.platform, &["local:/big.bin", "remote:/big.bin"]);
        // Killed once some of the file has arrived: the partial file is
        // sized up front, so count the blocks actually written.
        wait_for("a partly written file at the destination", || {
            use std::os::unix::fs::MetadataExt;
            std::fs::read_dir(&remote)
                .unwrap()
                .filter_map(Result::ok)
                .any(|e| {
                    e.file_name().to_string_lossy().starts_with(".lattice-part-")
                        && e.metadata().is_ok_and(|m| m.blocks() * 512 >= 8 << 20)
                })
                .then_some(())
        })
        .await;
        let before_kill = transfer(&s.client, id).await;
        assert!(
            !before_kill.status.is_final(),
            "the transfer finished before the kill; make BIG larger: {before_kill:?}"
        );
        s.remote.kill();
        online(&s.client, "remote", false).await;
        let paused = wait_for_status(&s.client, id, TransferStatus::Paused).await;
        assert!(paused.status_message.unwrap().contains("offline"));
        s.remote.restart();
        let wait = s.platform.cli(&["transfer", "wait", &id.to_string(), "--timeout", "120"]);
        let done = transfer(&s.client, id).await;
        ok(wait);
        assert!(same_file(&local.join("big.bin"), &remote.join("big.bin")));
        assert!(done.attempts >= 2, "{done:?}");
        let events = s.client.transfer_events(id, 0).await.unwrap();
        let codes: Vec<&str> = events.iter().map(|e| e.code.as_str()).collect();
        assert!(codes.contains(&"CONNECTION_RESET"), "{codes:?}");
        assert!(codes.contains(&"PAUSED") && codes.contains(&"RESUMED"), "{codes:?}");
        assert_eq!(done.checksums.len(), 1);
        eprintln!(
            "FIGURE resume: {} MiB file, destination killed after {} MiB reported; {} MiB transferred in total over {} attempts in {:.1} s",
            BIG >> 20,
            before_kill.counters.bytes_transferred >> 20,
            done.counters.bytes_transferred >> 20,
            done.attempts,
            started.elapsed().as_secs_f64()
        );
        // No partial files or journals are left.
        assert!(std::fs::read_dir(&remote)
            .unwrap()
            .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with(".lattice-part-")));
    });
}

async fn wait_for_status(client: &Client, id: TransferId, status: TransferStatus) -> TransferInfo {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let t = transfer(client, id).await;
        if t.status == status {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "transfer never {status:?}: {t:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn failures_cancel_and_idempotent_submission_through_the_cli() {
    runtime().block_on(async {
        let mut s = scene().await;
        let local = s.platform.local_collection_root();

        // What the source agent can tell at submission is refused at once
        // (exit 4): a missing source, a directory without -r.
        let refused = s.platform.cli(&["transfer", "local:/missing", "remote:/missing"]);
        assert_eq!(refused.status.code(), Some(4), "{refused:?}");
        let stderr = String::from_utf8_lossy(&refused.stderr);
        assert!(stderr.contains("`/missing` does not exist in collection `local`"), "{stderr}");
        write(&local.join("adir/x"), b"x");
        let refused = s.platform.cli(&["transfer", "local:/adir", "remote:/adir"]);
        assert_eq!(refused.status.code(), Some(4), "{refused:?}");
        assert!(String::from_utf8_lossy(&refused.stderr).contains("is a directory: transfer it with --recursive"));

        // Past the items looked at on submission, a missing source is a
        // fault of the task: FILE_NOT_FOUND, and `wait` exits 6.
        let mut pairs = String::new();
        for n in 0..100 {
            write(&local.join(format!("many/f{n}")), b"m");
            pairs.push_str(&format!("local:/many/f{n} remote:/many/f{n}\n"));
        }
        pairs.push_str("local:/missing remote:/missing\n");
        let many = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(many.path(), pairs).unwrap();
        let id = submit(&s.platform, &["--batch", many.path().to_str().unwrap()]);
        let wait = s.platform.cli(&["transfer", "wait", &id.to_string()]);
        assert_eq!(wait.status.code(), Some(6), "{wait:?}");
        let events =
            ok(s.platform
                .cli(&["transfer", "events", &id.to_string(), "--format", "json"]));
        assert!(events.contains("FILE_NOT_FOUND"), "{events}");
        // Text lines count items from 1: the missing one is item 101.
        let lines = ok(s.platform.cli(&["transfer", "events", &id.to_string()]));
        let fault = lines
            .lines()
            .find(|l| l.contains("FILE_NOT_FOUND"))
            .unwrap_or_else(|| panic!("{lines}"));
        assert!(fault.contains(" item 101 "), "{fault}");

        // A file sent to an existing directory, or to `dir/`, lands inside
        // it under its own name, as with cp.
        write(&local.join("f1.txt"), b"first");
        write(&local.join("f2.txt"), b"second");
        ok(s.platform.cli(&["mkdir", "remote:/single"]));
        let into = submit(&s.platform, &["local:/f1.txt", "remote:/single"]);
        ok(s.platform.cli(&["transfer", "wait", &into.to_string()]));
        let slash = submit(&s.platform, &["local:/f2.txt", "remote:/single/"]);
        ok(s.platform.cli(&["transfer", "wait", &slash.to_string()]));
        let single = s.remote_root.path().join("single");
        assert_eq!(std::fs::read(single.join("f1.txt")).unwrap(), b"first");
        assert_eq!(std::fs::read(single.join("f2.txt")).unwrap(), b"second");

        // Resubmitting with a submission id returns the same task.
        write(&local.join("one"), b"1");
        let args = ["local:/one", "remote:/one", "--submission-id", "run-42"];
        let first = submit(&s.platform, &args);
        let second = submit(&s.platform, &args);
        assert_eq!(first, second);
        ok(s.platform.cli(&["transfer", "wait", &first.to_string()]));

        // --batch: several pairs, one task; `-r` makes one pair recursive.
        write(&local.join("b1"), b"b1");
        write(&local.join("b 2"), b"b2");
        write(&local.join("bdir/inner"), b"b3");
        let batch = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            batch.path(),
            "# pairs\nlocal:/b1 remote:/b1\n\"local:/b 2\" \"remote:/b 2\"\n-r local:/bdir remote:/bdir\n",
        )
        .unwrap();
        let id = submit(&s.platform, &["--batch", batch.path().to_str().unwrap()]);
        ok(s.platform.cli(&["transfer", "wait", &id.to_string()]));
        assert_eq!(
            std::fs::read(s.remote_root.path().join("b 2")).unwrap(),
            b"b2"
        );
        assert_eq!(
            std::fs::read(s.remote_root.path().join("bdir/inner")).unwrap(),
            b"b3"
        );
        assert_eq!(transfer(&s.client, id).await.items_done, 3);

        // An offline destination pauses the task; cancel ends it (wait: 6).
        s.remote.kill();
        online(&s.client, "remote", false).await;
        let id = submit(&s.platform, &["local:/one", "remote:/later"]);
        wait_for_status(&s.client, id, TransferStatus::Paused).await;
        // The pause names the offline endpoint by its name.
        let events = ok(s.platform.cli(&["transfer", "events", &id.to_string()]));
        assert!(events.contains("endpoint `remote` ("), "{events}");
        let timeout = s
            .platform
            .cli(&["transfer", "wait", &id.to_string(), "--timeout", "1"]);
        assert_eq!(timeout.status.code(), Some(7), "{timeout:?}");
        ok(s.platform.cli(&["transfer", "cancel", &id.to_string()]));
        let wait = s.platform.cli(&["transfer", "wait", &id.to_string()]);
        assert_eq!(wait.status.code(), Some(6), "{wait:?}");
        let list = ok(s.platform.cli(&["transfer", "list"]));
        assert!(
            list.contains("cancelled") && list.contains("failed"),
            "{list}"
        );
    });
}
