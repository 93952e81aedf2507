//! The Wasm runtime against the modules in `tests/wasm/` (WebAssembly text,
//! compiled to binary here with the `wat` crate), including a malicious set.

use super::*;
use crate::testing::task;
use crate::Status;
use serde_json::json;

/// The binary of `tests/wasm/<name>.wat`, base64 as in a function spec.
fn module(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/wasm")
        .join(format!("{name}.wat"));
    let binary = wat::parse_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    base64::engine::general_purpose::STANDARD.encode(binary)
}

fn wasm_task(name: &str, args: &[(&str, serde_json::Value)], walltime_secs: u32) -> Invocation {
    task(
        FunctionSpec::Wasm {
            module: module(name),
        },
        args,
        walltime_secs,
    )
}

fn runtime() -> (tempfile::TempDir, WasmRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = WasmRuntime::new(dir.path());
    (dir, runtime)
}

/// Runs `name` and checks that it failed with an error starting with `prefix`.
async fn fails_with(runtime: &WasmRuntime, t: &Invocation, prefix: &str) -> Outcome {
    let outcome = runtime.run(t).await;
    assert_eq!(outcome.status, Status::Failed, "{outcome:?}");
    let error = outcome.error.as_deref().unwrap();
    assert!(
        error.starts_with(prefix),
        "expected `{prefix}...`, got: {error}"
    );
    outcome
}

/// The runtime still runs a well-behaved module (after a malicious one).
async fn still_works(runtime: &WasmRuntime) {
    let outcome = runtime
        .run(&wasm_task("hello", &[("argv", json!(["ok"]))], 10))
        .await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(outcome.result.unwrap().stdout, "ok\n");
}

#[tokio::test]
async fn hello_gets_argv_and_stdin() {
    let (dir, runtime) = runtime();
    let t = wasm_task(
        "hello",
        &[
            ("argv", json!(["one", "two words", 3])),
            ("stdin", json!("from stdin\n")),
        ],
        10,
    );
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    let result = outcome.result.unwrap();
    assert_eq!(result.stdout, "one\ntwo words\n3\nfrom stdin\n");
    assert_eq!(result.stderr, "done\n");
    assert_eq!(result.returncode, Some(0));
    assert_scratch_empty(dir.path());
}

/// Nothing a module wrote is left: the work directories kept for reuse are
/// empty.
fn assert_scratch_empty(root: &Path) {
    for work in std::fs::read_dir(root.join(".wasm-work")).unwrap() {
        let work = work.unwrap().path();
        let left: Vec<_> = std::fs::read_dir(&work).unwrap().collect();
        assert!(left.is_empty(), "{} holds {left:?}", work.display());
    }
}

#[tokio::test]
async fn argv_as_a_string_is_split_on_whitespace() {
    let (_dir, runtime) = runtime();
    let t = wasm_task("hello", &[("argv", json!(" -n  3 "))], 10);
    assert_eq!(runtime.run(&t).await.result.unwrap().stdout, "-n\n3\n");
}

#[tokio::test]
async fn without_argv_the_values_come_in_key_order() {
    let (_dir, runtime) = runtime();
    let t = wasm_task(
        "hello",
        &[
            ("b", json!("second")),
            ("a", json!("first")),
            ("c", json!({"x": 1})),
            ("stdin", json!("")),
        ],
        10,
    );
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.result.unwrap().stdout, "first\nsecond\n{\"x\":1}\n");
}

#[tokio::test]
async fn bad_arguments_fail_before_running() {
    let (_dir, runtime) = runtime();
    fails_with(
        &runtime,
        &wasm_task("hello", &[("argv", json!({"not": "a list"}))], 10),
        "invalid arguments: `argv` must be an array or a string",
    )
    .await;
    fails_with(
        &runtime,
        &wasm_task("hello", &[("stdin", json!(5))], 10),
        "invalid arguments: `stdin` must be a string",
    )
    .await;
}

#[tokio::test]
async fn exit_status_is_the_return_code() {
    let (_dir, runtime) = runtime();
    let outcome = fails_with(
        &runtime,
        &wasm_task("exit", &[], 10),
        "module exited with status 7",
    )
    .await;
    let result = outcome.result.unwrap();
    assert_eq!(result.returncode, Some(7));
    assert_eq!(result.stdout, "bye\n");
}

#[tokio::test]
async fn infinite_loop_times_out() {
    let (_dir, runtime) = runtime();
    fails_with(
        &runtime,
        &wasm_task("loop", &[], 1),
        "timeout: exceeded walltime of 1 s",
    )
    .await;
    still_works(&runtime).await;
}

#[tokio::test]
async fn cancel_stops_a_running_module() {
    let (_dir, runtime) = runtime();
    let outcome = runtime
        .run_cancellable(
            &wasm_task("loop", &[], 0),
            tokio::time::sleep(Duration::from_millis(100)),
        )
        .await;
    assert!(outcome.is_none());
    still_works(&runtime).await;
}

#[tokio::test]
async fn memory_bomb_hits_the_memory_limit() {
    let (_dir, runtime) = runtime();
    let outcome = fails_with(&runtime, &wasm_task("membomb", &[], 30), "memory limit: ").await;
    assert!(
        outcome
            .error
            .unwrap()
            .contains("the limit is 536870912 bytes"),
        "the default is 512 MiB"
    );
    still_works(&runtime).await;
}

#[tokio::test]
async fn a_lower_memory_limit_applies_to_initial_memory_too() {
    let (_dir, mut runtime) = runtime();
    runtime.memory_bytes = 64 << 20;
    let outcome = fails_with(&runtime, &wasm_task("bigmemory", &[], 30), "memory limit: ").await;
    assert!(outcome
        .error
        .unwrap()
        .contains("the limit is 67108864 bytes"));
    let outcome = fails_with(&runtime, &wasm_task("membomb", &[], 30), "memory limit: ").await;
    assert!(outcome.error.unwrap().contains("67108864"));
}

#[tokio::test]
async fn output_flood_hits_the_output_limit() {
    let (_dir, mut runtime) = runtime();
    runtime.max_output_bytes = 1 << 20;
    runtime.output_tail_bytes = 1000;
    let outcome = fails_with(
        &runtime,
        &wasm_task("flood", &[], 30),
        "output limit: the function wrote more than 1048576 bytes",
    )
    .await;
    assert_eq!(outcome.result.unwrap().stdout.len(), 1000);
    still_works(&runtime).await;
}

#[tokio::test]
async fn trap_fails_with_its_message_and_backtrace() {
    let (_dir, runtime) = runtime();
    let outcome = fails_with(
        &runtime,
        &wasm_task("trap", &[], 10),
        "trap: wasm `unreachable` instruction executed",
    )
    .await;
    let error = outcome.error.as_deref().unwrap();
    assert!(
        error.contains("crash"),
        "the backtrace names the function: {error}"
    );
    assert_eq!(outcome.result.unwrap().stdout, "before the trap\n");
    still_works(&runtime).await;
}

#[tokio::test]
async fn filesystem_is_only_the_scratch_dir() {
    let (dir, runtime) = runtime();
    let outcome = runtime.run(&wasm_task("escape", &[], 10)).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(
        outcome.result.unwrap().stdout,
        "preopen /work\n\
         preopen .\n\
         note.txt ok\n\
         /etc/passwd denied\n\
         ../../../../../../etc/passwd denied\n\
         etc/passwd denied\n"
    );
    // The file and the symlink it made are removed; a second run sees an
    // empty directory again (it creates note.txt anew).
    assert_scratch_empty(dir.path());
    let outcome = runtime.run(&wasm_task("escape", &[], 10)).await;
    assert!(outcome.result.unwrap().stdout.contains("note.txt ok"));
    assert_scratch_empty(dir.path());
}

#[tokio::test]
async fn environment_is_empty_unless_allowed() {
    let (_dir, mut runtime) = runtime();
    let outcome = runtime.run(&wasm_task("env", &[], 10)).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(outcome.result.unwrap().stdout, "", "no variable by default");

    // Only the allowed name (and only when the worker has it) gets through.
    let path = std::env::var("PATH").expect("tests run with PATH set");
    runtime = WasmRuntime::new(runtime.scratch_root.clone());
    runtime.env_allow = vec!["PATH".into(), "LATTICE_TEST_SURELY_UNSET".into()];
    let outcome = runtime.run(&wasm_task("env", &[], 10)).await;
    assert_eq!(outcome.result.unwrap().stdout, format!("PATH={path}\n"));
}

#[tokio::test]
async fn invalid_modules_are_task_errors() {
    let (_dir, runtime) = runtime();
    let not_base64 = task(
        FunctionSpec::Wasm {
            module: "%%%".into(),
        },
        &[],
        10,
    );
    fails_with(
        &runtime,
        &not_base64,
        "invalid wasm module: not valid base64",
    )
    .await;
    let garbage = task(
        FunctionSpec::Wasm {
            module: base64::engine::general_purpose::STANDARD.encode(b"\0asm\x01\0\0\0garbage"),
        },
        &[],
        10,
    );
    fails_with(&runtime, &garbage, "invalid wasm module: ").await;
    let library = task(
        FunctionSpec::Wasm {
            module: base64::engine::general_purpose::STANDARD
                .encode(wat::parse_str("(module (func (export \"f\")))").unwrap()),
        },
        &[],
        10,
    );
    fails_with(
        &runtime,
        &library,
        "invalid wasm module: no `_start` export",
    )
    .await;
    let foreign_import = task(
        FunctionSpec::Wasm {
            module: base64::engine::general_purpose::STANDARD.encode(
                wat::parse_str(
                    "(module (import \"env\" \"socket\" (func)) (func (export \"_start\")))",
                )
                .unwrap(),
            ),
        },
        &[],
        10,
    );
    let outcome = fails_with(&runtime, &foreign_import, "invalid wasm module: ").await;
    assert!(outcome.error.unwrap().contains("socket"));
    still_works(&runtime).await;
}

#[tokio::test]
async fn modules_are_compiled_once_and_cached_on_disk() {
    let (dir, first) = runtime();
    let mut t = wasm_task("hello", &[("argv", json!(["x"]))], 10);
    assert_eq!(first.run(&t).await.status, Status::Success);
    assert_eq!(
        first.cache_stats(),
        WasmCacheStats {
            compiled: 1,
            loaded: 0,
            reused: 0
        }
    );
    let cached: Vec<_> = std::fs::read_dir(dir.path().join(".wasm-cache"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(cached[0].ends_with(".cwasm"));

    // Same worker: the linked module is reused.
    t.task_id = lattice_protocol::TaskId::new();
    assert_eq!(first.run(&t).await.status, Status::Success);
    assert_eq!(first.cache_stats().reused, 1);

    // Another worker on the host: loaded from disk, not compiled.
    let second = WasmRuntime::new(dir.path());
    let outcome = second.run(&t).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(outcome.result.unwrap().stdout, "x\n");
    assert_eq!(
        second.cache_stats(),
        WasmCacheStats {
            compiled: 0,
            loaded: 1,
            reused: 0
        }
    );
}

#[tokio::test]
async fn a_corrupt_cache_file_is_replaced() {
    let (dir, first) = runtime();
    let t = wasm_task("noop", &[], 10);
    assert_eq!(first.run(&t).await.status, Status::Success);
    let cache = dir.path().join(".wasm-cache");
    for entry in std::fs::read_dir(&cache).unwrap() {
        std::fs::write(entry.unwrap().path(), b"not machine code").unwrap();
    }
    let second = WasmRuntime::new(dir.path());
    assert_eq!(second.run(&t).await.status, Status::Success);
    assert_eq!(second.cache_stats().compiled, 1);
}

#[tokio::test]
async fn many_invocations_reuse_pool_slots() {
    let (_dir, mut runtime) = runtime();
    runtime.max_instances = 2;
    // More invocations than slots, one after the other: slots are returned.
    for _ in 0..10 {
        still_works(&runtime).await;
    }
}

/// `tests/wasm/hello.c` built with clang + wasi-libc, base64; `None` (skip)
/// when the toolchain is missing (`.ci/runtime.sh` installs it).
fn c_module() -> Option<String> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/wasm/hello.c");
    let out = tempfile::tempdir().unwrap();
    let wasm = out.path().join("hello.wasm");
    let built = std::process::Command::new("clang")
        .args(["--target=wasm32-wasi", "-O2", "-Wl,--strip-all", "-o"])
        .arg(&wasm)
        .arg(&source)
        .output();
    let reason = match built {
        Ok(built) if built.status.success() => {
            let bytes = std::fs::read(&wasm).unwrap();
            return Some(base64::engine::general_purpose::STANDARD.encode(bytes));
        }
        Ok(built) => format!(
            "clang cannot build for wasm32-wasi: {}",
            String::from_utf8_lossy(&built.stderr)
        ),
        Err(e) => format!("no clang: {e}"),
    };
    if std::env::var("LATTICE_REQUIRE_SERVICES").as_deref() == Ok("1") {
        panic!("LATTICE_REQUIRE_SERVICES=1 but {reason}; run .ci/runtime.sh");
    }
    eprintln!("skipping the C module test: {reason} (run .ci/runtime.sh)");
    None
}

#[tokio::test]
async fn c_module_built_with_wasi_libc() {
    let Some(module) = c_module() else {
        return;
    };
    let (_dir, runtime) = runtime();
    let spec = FunctionSpec::Wasm { module };
    let t = task(
        spec.clone(),
        &[("argv", json!(["x", "y z"])), ("stdin", json!("shout\n"))],
        30,
    );
    let outcome = runtime.run(&t).await;
    assert_eq!(outcome.status, Status::Success, "{outcome:?}");
    assert_eq!(
        outcome.result.unwrap().stdout,
        "arg x\narg y z\nSHOUT\nnote kept\npasswd denied\nHOME unset\n"
    );

    // malloc(1 GiB) grows memory past the limit: the invocation ends there.
    let t = task(spec, &[("argv", json!(["big"]))], 30);
    let outcome = fails_with(&runtime, &t, "memory limit: ").await;
    assert_eq!(
        outcome.result.unwrap().stdout,
        "arg big\nnote kept\npasswd denied\nHOME unset\n"
    );
}
