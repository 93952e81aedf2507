//! The README's tour, run as written: the `sh` blocks under "A short tour"
//! and "Collections and transfers" are taken from README.md and run line by
//! line in one bash (`set -euo pipefail`, so every step must exit 0), with
//! this build's `lattice` first on PATH, a fresh HOME, and `lattice dev` on
//! a free port (`LATTICE_LISTEN`, so a developer's own `lattice dev` on
//! 8470 is left alone). The harness adds only waits after the lines that
//! start a process in the background (`lattice dev &`, `lattice agent ...
//! &`), as a reader would wait for it to come up, then checks each step's
//! output.

use std::path::Path;
use std::process::{Command, Stdio};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");

/// The lines of the first ```sh block after `heading` in the README.
fn block_after(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("README.md has no `{heading}`"));
    let rest = &readme[start..];
    let open = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block's end");
    rest[open..open + close]
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Single-quoted for bash.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[test]
fn the_readme_tour_runs_as_written() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let mut lines = block_after(&readme, "## A short tour");
    lines.extend(block_after(&readme, "### Collections and transfers"));

    let home = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(LATTICE).parent().unwrap();
    let port = lattice_tests::free_port();
    let mut script = String::from(
        r#"set -euo pipefail
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null' EXIT
# Waits a reader does without thinking: for what a background line started.
ready() {
  for _ in $(seq 1 600); do
    case "$1" in
      *"lattice dev"*) lattice endpoint show local --format json 2>/dev/null | grep -q '"online"' && return 0 ;;
      *"lattice agent"*) lattice collection show scratch >/dev/null 2>&1 && return 0 ;;
      *) return 0 ;;
    esac
    sleep 0.1
  done
  echo "not up within 60 s after: $1" >&2
  return 1
}
"#,
    );
    for line in &lines {
        let command = line.split(" #").next().unwrap_or("").trim();
        if command.is_empty() || command.starts_with('#') {
            continue;
        }
        script.push_str(&format!(
            "echo {}\n{line}\n",
            quoted(&format!("@@ {command}"))
        ));
        if command.ends_with('&') {
            script.push_str(&format!("ready {}\n", quoted(command)));
        }
    }
    let output = Command::new("bash")
        .arg("-c")
        .arg(&script)
        .current_dir(home.path())
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join(".config"))
        .env("XDG_DATA_HOME", home.path().join(".local/share"))
        .env("LATTICE_LISTEN", format!("127.0.0.1:{port}"))
        .env("LATTICE_LOG", "warn")
        .env_remove("LATTICE_URL")
        .env_remove("LATTICE_TOKEN")
        .env_remove("LATTICE_CA_FILE")
        .stdin(Stdio::null())
        .output()
        .expect("run bash");
    let transcript = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "the tour stopped ({:?}) at the last step shown:\n{transcript}\nstderr:\n{stderr}",
        output.status.code()
    );

    // What each step shows (its output follows its `@@` line).
    let after = |step: &str| -> String {
        let start = transcript
            .find(&format!("@@ {step}"))
            .unwrap_or_else(|| panic!("no step `{step}` in:\n{transcript}"));
        let rest = &transcript[start..];
        let body = &rest[rest.find('\n').map_or(rest.len(), |i| i + 1)..];
        body[..body.find("\n@@ ").map_or(body.len(), |i| i + 1)].to_owned()
    };
    assert!(
        after("lattice run --endpoint local -- uname -a").contains("Linux"),
        "{transcript}"
    );
    assert!(
        after("lattice task wait $T").contains("/etc/passwd"),
        "{transcript}"
    );
    assert!(
        after("lattice task show $T --format json").contains("\"state\": \"success\""),
        "{transcript}"
    );
    assert!(
        after("lattice task wait --batch $B").contains("1000 tasks, 1000 succeeded"),
        "{transcript}"
    );
    let endpoints = after("lattice endpoint list");
    assert!(
        endpoints.contains("local") && endpoints.contains("online"),
        "{endpoints}"
    );
    assert!(
        after("lattice client create nightly-pipeline --scope compute").contains("client secret:"),
        "{transcript}"
    );
    assert!(
        after("lattice client list").contains("nightly-pipeline"),
        "{transcript}"
    );
    assert!(
        after("lattice collection list").contains("local"),
        "{transcript}"
    );
    assert!(
        after("lattice transfer show $T").contains("succeeded"),
        "{transcript}"
    );
    assert!(
        after("lattice transfer events $T").contains("SUBMITTED"),
        "{transcript}"
    );
}
