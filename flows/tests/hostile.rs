//! Never a panic on any input: thousands of mutated definitions (our Globus-style
//! fixtures, each node replaced by hostile values) go through
//! parsing, validation and a run, and random token soup goes through the
//! expression parser and evaluator. Deterministic (a fixed-seed xorshift).

use chrono::{TimeZone, Utc};
use lattice_flows::expr::{evaluate, Budget};
use lattice_flows::sim::{succeeded, Reply, Simulator};
use lattice_flows::{validate, FlowDefinition, Limits, Run};
use serde_json::{json, Value};

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

/// JSON Pointers of every node of `v`.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    out.push(at.clone());
    match v {
        Value::Object(map) => {
            for (k, x) in map {
                let k = k.replace('~', "~0").replace('/', "~1");
                pointers(x, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

fn replacements() -> Vec<Value> {
    vec![
        Value::Null,
        json!(0),
        json!(-1),
        json!(1e300),
        json!(""),
        json!("$["),
        json!("$.nope.deeper"),
        json!("Nowhere"),
        json!("x +* 2"),
        json!([]),
        json!({}),
        json!(true),
        json!({"Type": "Pass", "Next": "Nowhere"}),
        json!({"Type": "Choice", "Choices": [{"Not": {}}]}),
        json!({"Type": "Map", "Iterator": {"StartAt": "A", "States": {}}, "End": true}),
    ]
}

#[test]
fn mutated_globus_style_definitions_never_panic() {
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut variants = 0;
    let mut parsed = 0;
    for name in [
        "move.json",
        "looping_batched_move.json",
        "transfer_compute_pipeline.json",
        "genomics_fanout.json",
    ] {
        let path = format!("{}/tests/globus_style/{name}", env!("CARGO_MANIFEST_DIR"));
        let original: Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut ptrs = Vec::new();
        pointers(&original, String::new(), &mut ptrs);
        for ptr in ptrs.iter().skip(1) {
            for replacement in replacements() {
                let mut v = original.clone();
                *v.pointer_mut(ptr).unwrap() = replacement;
                variants += 1;
                let Ok(definition) = FlowDefinition::from_value(v) else {
                    continue;
                };
                parsed += 1;
                let _ = validate(&definition);
                let input = json!({"source": {"id": "s", "path": "/a/b"}, "destination": {"id": "d", "path": "/c/"}});
                let (mut run, cmds) = Run::start("fuzz", definition, input, Limits::default(), t0);
                let mut sim = Simulator::new(t0, |_| {
                    Reply::Succeed(succeeded(
                        json!({"type": "dir", "total": 0, "DATA": [], "result": [1]}),
                    ))
                });
                sim.execute(cmds);
                sim.play(&mut run, 300);
            }
        }
    }
    assert!(variants > 2_000, "{variants}");
    assert!(parsed > 500, "{parsed}");
}

#[test]
fn random_expressions_never_panic_and_stay_in_budget() {
    const WORDS: [&str; 48] = [
        "a",
        "b",
        "xs",
        "d",
        "s",
        "1",
        "0",
        "-1",
        "2.5",
        "'s'",
        "'/'",
        "\"q\"",
        "+",
        "-",
        "*",
        "/",
        "//",
        "%",
        "**",
        "(",
        ")",
        "[",
        "]",
        "{",
        "}",
        ",",
        ":",
        ".",
        "if",
        "else",
        "and",
        "or",
        "not",
        "in",
        "for",
        "x",
        "len",
        "pathsplit",
        "is_present",
        "getattr",
        "==",
        "<",
        "!=",
        "rpartition",
        "split",
        "None",
        "True",
        "99999999999999",
    ];
    let names =
        json!({"a": 1, "b": "str/ing", "xs": [1, 2, [3]], "d": {"k": [1], "s": "v"}, "s": "x"});
    let budget = Budget {
        max_steps: 5_000,
        max_value_bytes: 64 * 1024,
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut ok = 0;
    for _ in 0..30_000 {
        let n = 1 + rng.below(24);
        let src: Vec<&str> = (0..n).map(|_| WORDS[rng.below(WORDS.len())]).collect();
        let src = src.join(" ");
        if evaluate(&src, &names, budget).is_ok() {
            ok += 1;
        }
    }
    // some of the soup is valid and evaluates
    assert!(ok > 100, "{ok}");
    // and the deliberate bombs stop at the budget
    for bomb in [
        "[[x for x in xs] * 1000 for y in 'y' * 1000]",
        "('a' * 1000) * 1000",
        "[0] * 99999999999999",
        "2 ** 2 ** 2 ** 2 ** 2",
    ] {
        assert!(evaluate(bomb, &names, budget).is_err(), "{bomb}");
    }
}
