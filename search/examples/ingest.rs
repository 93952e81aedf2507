//! Ingest throughput of the embedded engine, by hand:
//!
//! ```text
//! cargo run --release -p lattice-search --example ingest -- [DOCS] [BATCH]
//! ```
//!
//! Generates DOCS (default 100,000) dataset records like an instrument
//! facility's (instrument, sample, dates, numbers, keywords, free-text
//! description), ingests them BATCH (default 10,000) per call into a
//! tantivy index in a temporary directory, and prints docs/s, then times a
//! few queries on the result.

// A command-line tool: its output is the point.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use lattice_protocol::search::{
    Entry, Facet, FacetKind, Filter, QueryMode, ScrollRequest, SearchQuery, SearchRequest,
    SortField, SortOrder,
};
use lattice_protocol::SearchIndexId;
use lattice_search::{EntryOutcome, Limits, SearchEngine, TantivyEngine, Visibility};
use serde_json::json;

const INSTRUMENTS: [&str; 8] = ["XRD", "SEM", "TEM", "SANS", "AFM", "NMR", "MS", "FTIR"];
const WORDS: [&str; 40] = [
    "crystal",
    "growth",
    "protein",
    "alloy",
    "fatigue",
    "stress",
    "thin",
    "film",
    "lattice",
    "neutron",
    "scattering",
    "electron",
    "microscopy",
    "diffraction",
    "sample",
    "surface",
    "temperature",
    "pressure",
    "phase",
    "transition",
    "magnetic",
    "spin",
    "polymer",
    "membrane",
    "catalyst",
    "oxide",
    "nanoparticle",
    "solvent",
    "buffer",
    "enzyme",
    "kinetics",
    "spectrum",
    "resolution",
    "beamline",
    "detector",
    "calibration",
    "anneal",
    "dopant",
    "grain",
    "boundary",
];
const GROUPS: [&str; 4] = [
    "group:00000000-0000-4000-8000-000000000001",
    "group:00000000-0000-4000-8000-000000000002",
    "group:00000000-0000-4000-8000-000000000003",
    "group:00000000-0000-4000-8000-000000000004",
];

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn record(i: usize, rng: &mut Rng) -> Entry {
    let words = |rng: &mut Rng, n: usize| -> String {
        (0..n)
            .map(|_| WORDS[rng.below(WORDS.len())])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let day = 1 + rng.below(28);
    let month = 1 + rng.below(12);
    let year = 2015 + rng.below(10);
    let visible_to = match rng.below(4) {
        0 => vec!["public".to_string()],
        1 => vec!["all_authenticated_users".to_string()],
        _ => vec![GROUPS[rng.below(GROUPS.len())].to_string()],
    };
    Entry {
        subject: format!("facility:/data/run-{:07}/dataset.h5", i),
        id: None,
        content: json!({
            "title": words(rng, 5),
            "description": words(rng, 25),
            "instrument": INSTRUMENTS[rng.below(INSTRUMENTS.len())],
            "sample": {"id": format!("S-{}", rng.below(5_000)), "material": WORDS[rng.below(10)]},
            "collected": format!("{year}-{month:02}-{day:02}T{:02}:{:02}:00Z", rng.below(24), rng.below(60)),
            "published": format!("{year}-{month:02}-{day:02}"),
            "size_bytes": rng.below(10_000_000_000),
            "temperature_k": 4.0 + rng.below(30_000) as f64 / 100.0,
            "keywords": [WORDS[rng.below(40)], WORDS[rng.below(40)], WORDS[rng.below(40)]],
            "calibrated": rng.below(2) == 0,
        }),
        visible_to,
    }
}

/// CPU time (user + system, every thread) of this process so far, from
/// `/proc/self/stat` (Linux; `None` elsewhere). Ticks are 1/100 s.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let docs: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let batch: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);

    let dir = tempfile::tempdir()?;
    let engine = TantivyEngine::open(dir.path().to_path_buf())?;
    let index = SearchIndexId::new();
    engine.create_index(index).await?;

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let records: Vec<Entry> = (0..docs).map(|i| record(i, &mut rng)).collect();
    let limits = Limits::default();
    let started = Instant::now();
    let cpu_before = cpu_seconds();
    let mut applied = 0;
    for chunk in records.chunks(batch) {
        let outcomes = engine.ingest(index, chunk.to_vec(), &limits).await?;
        applied += outcomes
            .iter()
            .filter(|o| **o == EntryOutcome::Applied)
            .count();
    }
    let elapsed = started.elapsed();
    println!(
        "ingested {applied} of {docs} docs in batches of {batch}: {:.2} s, {:.0} docs/s",
        elapsed.as_secs_f64(),
        applied as f64 / elapsed.as_secs_f64()
    );
    if let (Some(before), Some(after)) = (cpu_before, cpu_seconds()) {
        // On a shared machine wall time depends on the neighbours; CPU time
        // (all threads) does not.
        println!(
            "ingest CPU time {:.2} s: {:.0} docs per CPU-second",
            after - before,
            applied as f64 / (after - before)
        );
    }

    let visibility = Visibility::Principals(vec![
        "public".into(),
        "all_authenticated_users".into(),
        GROUPS[0].into(),
    ]);
    let text = |q: &str, mode| SearchRequest {
        query: SearchQuery {
            q: Some(q.into()),
            mode,
            filters: vec![],
        },
        ..SearchRequest::default()
    };
    let mut faceted = text("crystal growth", QueryMode::Simple);
    faceted.query.filters = vec![Filter::MatchAny {
        field_name: "instrument".into(),
        values: vec![json!("XRD"), json!("SEM")],
    }];
    faceted.facets = vec![
        Facet {
            name: None,
            field_name: "instrument".into(),
            kind: FacetKind::Terms { size: None },
        },
        Facet {
            name: None,
            field_name: "collected".into(),
            kind: FacetKind::DateHistogram {
                date_interval: lattice_protocol::search::DateInterval::Year,
            },
        },
        Facet {
            name: None,
            field_name: "temperature_k".into(),
            kind: FacetKind::Avg,
        },
    ];
    let mut sorted = text("temperature_k:[100 TO 200]", QueryMode::Advanced);
    sorted.sort = vec![SortField {
        field_name: "collected".into(),
        order: SortOrder::Desc,
    }];
    let queries = [
        ("free text", text("crystal growth", QueryMode::Simple)),
        ("faceted", faceted),
        ("sorted range", sorted),
    ];
    for (name, request) in &queries {
        let mut times = Vec::new();
        let mut total = 0;
        for _ in 0..20 {
            let started = Instant::now();
            total = engine.search(index, request, &visibility).await?.total;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{name}: {total} hits, p50 {:.1} ms, max {:.1} ms",
            times[times.len() / 2],
            times[times.len() - 1]
        );
    }
    let started = Instant::now();
    let mut request = ScrollRequest {
        limit: Some(1_000),
        ..ScrollRequest::default()
    };
    let mut scrolled = 0;
    loop {
        let page = engine.scroll(index, &request, &visibility).await?;
        scrolled += page.count;
        match page.marker {
            Some(marker) => request.marker = Some(marker),
            None => break,
        }
    }
    println!(
        "scrolled {scrolled} visible entries in pages of 1,000: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
