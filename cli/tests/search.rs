//! Search through the real binary: `lattice dev` (SQLite store, tantivy
//! engine) and `lattice search ...` as its identity: an index, ingests
//! that succeed and fail (`--wait` exit codes and messages), queries in
//! text and JSON with a facet, and `--all` scrolling past one page.

use lattice_tests::platform::{failed, succeeded, DevOptions, DevPlatform};

const LATTICE: &str = env!("CARGO_BIN_EXE_lattice");

#[test]
fn index_ingest_and_query_through_the_cli() {
    let platform = DevPlatform::start(LATTICE.as_ref(), DevOptions::default());
    let dir = tempfile::tempdir().unwrap();
    let index = succeeded(platform.cli(&[
        "search",
        "index",
        "create",
        "datasets",
        "--description",
        "test datasets",
    ]));
    let index = index.trim().to_owned();
    assert_eq!(index.len(), 36, "{index}");

    // 25 entries as a JSON list: a scroll of 10 per page takes three pages.
    let entries: Vec<serde_json::Value> = (0..25)
        .map(|i| {
            serde_json::json!({
                "subject": format!("local:/data/run{i:02}.h5"),
                "content": {
                    "title": format!("silicon run {i}"),
                    "instrument": if i % 5 == 0 { "saxs" } else { "xrd" },
                    "size": i,
                },
                "visible_to": ["public"],
            })
        })
        .collect();
    let good = dir.path().join("good.json");
    std::fs::write(&good, serde_json::to_string(&entries).unwrap()).unwrap();
    let done = succeeded(platform.cli(&[
        "search",
        "ingest",
        "datasets",
        good.to_str().unwrap(),
        "--wait",
    ]));
    assert!(
        done.contains("success") && done.contains("25 of 25"),
        "{done}"
    );

    // One bad entry: exit 6, the entry named on stderr; the good one applied.
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        serde_json::json!({"ingest_type": "GMetaList", "ingest_data": {"gmeta": [
            {"subject": "local:/data/extra.h5", "content": {"size": 99}, "visible_to": ["public"]},
            {"subject": "local:/data/broken.h5", "content": {"size": "huge"}, "visible_to": ["public"]},
        ]}})
        .to_string(),
    )
    .unwrap();
    let (code, stderr) =
        failed(platform.cli(&["search", "ingest", &index, bad.to_str().unwrap(), "--wait"]));
    assert_eq!(code, 6, "{stderr}");
    assert!(
        stderr.contains("rejected entry 1") && stderr.contains("local:/data/broken.h5"),
        "{stderr}"
    );
    // A file that is no ingest document is a usage error.
    let junk = dir.path().join("junk.json");
    std::fs::write(&junk, "{").unwrap();
    let (code, stderr) =
        failed(platform.cli(&["search", "ingest", &index, junk.to_str().unwrap()]));
    assert_eq!(code, 2, "{stderr}");

    // Text: subjects, then the facet's counts.
    let text = succeeded(platform.cli(&[
        "search",
        "query",
        "datasets",
        "silicon",
        "--facet",
        "instrument",
        "--sort",
        "size:desc",
        "--limit",
        "5",
    ]));
    assert!(text.contains("local:/data/run24.h5"), "{text}");
    assert!(text.contains("of 25"), "{text}");
    assert!(text.contains("instrument:"), "{text}");
    assert!(text.contains("xrd") && text.contains("20"), "{text}");

    // JSON: the result document.
    let json = succeeded(platform.cli(&[
        "search",
        "query",
        &index,
        "--match",
        "instrument=saxs",
        "--facet",
        "size:sum",
        "--format",
        "json",
    ]));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["total"], serde_json::json!(5), "{json}");
    assert_eq!(
        json["facet_results"][0]["value"].as_f64(),
        Some(50.0),
        "0 + 5 + 10 + 15 + 20: {json}"
    );

    // --all scrolls every page.
    let all = succeeded(platform.cli(&[
        "search", "query", &index, "--all", "--limit", "10", "--format", "json",
    ]));
    let all: serde_json::Value = serde_json::from_str(&all).unwrap();
    assert_eq!(all["count"], serde_json::json!(26), "{all}");
    assert_eq!(all["gmeta"].as_array().unwrap().len(), 26);

    // Subjects and tasks.
    let subject =
        succeeded(platform.cli(&["search", "subject", "show", &index, "local:/data/run03.h5"]));
    assert!(subject.contains("silicon run 3"), "{subject}");
    let tasks = succeeded(platform.cli(&["search", "task", "list", &index]));
    assert_eq!(tasks.lines().count(), 2, "{tasks}");
    let (code, _) = failed(platform.cli(&["search", "query", &index, "--limit", "100000"]));
    assert_eq!(code, 4);
}
