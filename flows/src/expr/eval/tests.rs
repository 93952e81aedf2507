//! Evaluation tests: semantics, missing names, and the budgets.

use crate::expr::{evaluate, Budget, ExprError};
use serde_json::{json, Value};

fn ev(src: &str, names: Value) -> Value {
    evaluate(src, &names, Budget::default()).unwrap_or_else(|e| panic!("{src}: {e}"))
}

#[test]
fn arithmetic_and_comparisons() {
    let n = json!({"a": 7, "b": 2.5});
    assert_eq!(ev("a + 1", n.clone()), json!(8));
    assert_eq!(ev("a / 2", n.clone()), json!(3.5));
    assert_eq!(ev("a // 2", n.clone()), json!(3));
    assert_eq!(ev("-a // 2", n.clone()), json!(-4));
    assert_eq!(ev("-7 % 3", n.clone()), json!(2));
    assert_eq!(ev("2 ** 10", n.clone()), json!(1024));
    assert_eq!(ev("-2 ** 2", n.clone()), json!(-4));
    assert_eq!(ev("a * b", n.clone()), json!(17.5));
    assert_eq!(ev("1 < a <= 7", n.clone()), json!(true));
    assert_eq!(ev("1 < a < 7", n.clone()), json!(false));
    assert_eq!(ev("a == 7.0", n.clone()), json!(true));
    assert_eq!(ev("a > 1 and b < 1 or 'x'", n.clone()), json!("x"));
    assert_eq!(ev("not a", n.clone()), json!(false));
    assert_eq!(ev("'big' if a > 5 else 'small'", n), json!("big"));
}

#[test]
fn strings_lists_and_dicts() {
    let n = json!({"p": "/data/run1/file.h5", "xs": [1, 2, 3], "a": {"id": "c1", "path": "/x"}});
    assert_eq!(ev("xs[1:]", n.clone()), json!([2, 3]));
    assert_eq!(ev("xs[-1]", n.clone()), json!(3));
    assert_eq!(ev("xs[:-1] + [9]", n.clone()), json!([1, 2, 9]));
    assert_eq!(ev("p[:5]", n.clone()), json!("/data"));
    assert_eq!(
        ev("{'id': a.id, 'path': a.path}", n.clone()),
        json!({"id": "c1", "path": "/x"})
    );
    assert_eq!(ev("a['id'] + '-' + str(len(xs))", n.clone()), json!("c1-3"));
    assert_eq!(
        ev("pathsplit(p)", n.clone()),
        json!(["/data/run1", "file.h5"])
    );
    assert_eq!(ev("pathsplit('file')", n.clone()), json!(["", "file"]));
    assert_eq!(ev("pathsplit('/file')", n.clone()), json!(["/", "file"]));
    // double quotes, and the Transfer root `/~/` kept whole
    assert_eq!(
        ev("pathsplit(\"/srv/lab/run.tar\")", n.clone()),
        json!(["/srv/lab", "run.tar"])
    );
    assert_eq!(
        ev("pathsplit(\"/~/run.tar\")", n.clone()),
        json!(["/~/", "run.tar"])
    );
    assert_eq!(ev("'f: ' + `$.a.id`", n.clone()), json!("f: c1"));
    assert_eq!(ev("`$.xs[*]`", n.clone()), json!([1, 2, 3]));
    assert_eq!(ev("p.rpartition('/')[2]", n.clone()), json!("file.h5"));
    assert_eq!(ev("'/x/'.rstrip('/') + '/y'", n.clone()), json!("/x/y"));
    assert_eq!(ev("'id' in a and 'zz' not in a", n.clone()), json!(true));
    assert_eq!(ev("2 in xs", n.clone()), json!(true));
    assert_eq!(ev("[x * 2 for x in xs if x > 1]", n.clone()), json!([4, 6]));
    assert_eq!(ev("upper(a.id) + lower('Q')", n.clone()), json!("C1q"));
    assert_eq!(
        ev("int('42') + int(2.9) + float('0.5')", n.clone()),
        json!(44.5)
    );
    assert_eq!(ev("','.join(['a', 'b'])", n.clone()), json!("a,b"));
    assert_eq!(ev("min(xs) + max(4, 5)", n.clone()), json!(6));
    assert_eq!(ev("a.get('nope', 'd')", n), json!("d"));
}

#[test]
fn is_present_and_getattr_never_fail_on_missing() {
    let n = json!({"a": {"b": 1}});
    assert_eq!(ev("is_present('a.b')", n.clone()), json!(true));
    assert_eq!(ev("is_present('a.c')", n.clone()), json!(false));
    assert_eq!(ev("is_present(a.c)", n.clone()), json!(false));
    assert_eq!(ev("is_present(zz)", n.clone()), json!(false));
    assert_eq!(ev("getattr(a, 'c', 5)", n.clone()), json!(5));
    assert_eq!(ev("getattr(a, 'b')", n.clone()), json!(1));
    // the anchor's form: a name of the state, and a default
    assert_eq!(ev("getattr('a.b', 10)", n.clone()), json!(1));
    assert_eq!(ev("getattr('x', 10)", n.clone()), json!(10));
    assert_eq!(ev("getattr('absent')", n.clone()), json!(null));
    assert_eq!(ev("x if is_present('x') else 10", n.clone()), json!(10));
    assert_eq!(ev("is_present('$.a.b')", n.clone()), json!(true));
    assert!(evaluate("`$.nope`", &n, Budget::default())
        .unwrap_err()
        .to_string()
        .contains("$.nope"));
}

#[test]
fn missing_names_and_keys_are_clear_errors() {
    let n = json!({"a": {"b": 1}, "xs": []});
    let e = evaluate("zz + 1", &n, Budget::default()).unwrap_err();
    assert_eq!(e.to_string(), "name 'zz' is not defined");
    let e = evaluate("a.c", &n, Budget::default()).unwrap_err();
    assert!(e.to_string().contains("'c'"), "{e}");
    let e = evaluate("xs[0]", &n, Budget::default()).unwrap_err();
    assert!(e.to_string().contains("out of range"), "{e}");
    assert!(matches!(
        evaluate("1 + 'a'", &n, Budget::default()),
        Err(ExprError::Type(_))
    ));
    assert!(evaluate("1 / 0", &n, Budget::default()).is_err());
    assert!(evaluate("9223372036854775807 + 1", &n, Budget::default()).is_err());
    assert!(evaluate("2 ** 99999", &n, Budget::default()).is_err());
    assert!(evaluate("open('/etc/passwd')", &n, Budget::default()).is_err());
}

#[test]
fn huge_allocations_hit_the_value_budget() {
    let n = json!({});
    for src in [
        "'x' * 1000000000",
        "[0] * 1000000000",
        "'ab'.replace('', 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx' * 30000)",
        "[[0] * 1000] * 1000",
    ] {
        let e = evaluate(src, &n, Budget::default()).unwrap_err();
        assert!(matches!(e, ExprError::Budget(_)), "{src}: {e}");
    }
    // doubling through nested comprehension is caught too
    let small = Budget {
        max_steps: 1_000_000,
        max_value_bytes: 10_000,
    };
    let e = evaluate("[[y for y in 'x' * 5000] for x in 'y' * 100]", &n, small).unwrap_err();
    assert!(matches!(e, ExprError::Budget(_)), "{e}");
}

#[test]
fn empty_sequences_repeat_to_empty_at_once() {
    let n = json!({});
    assert_eq!(ev("[] * 1000000000000000000", n.clone()), json!([]));
    assert_eq!(ev("'' * 1000000000000000000", n.clone()), json!(""));
    assert_eq!(ev("'ab' * -3", n), json!(""));
}

#[test]
fn long_computations_hit_the_step_budget() {
    let n = json!({"xs": (0..1000).collect::<Vec<_>>()});
    let budget = Budget {
        max_steps: 10_000,
        max_value_bytes: 1 << 20,
    };
    let e = evaluate("[[x for x in xs] for y in xs]", &n, budget).unwrap_err();
    assert!(e.to_string().contains("evaluation steps"), "{e}");
}
