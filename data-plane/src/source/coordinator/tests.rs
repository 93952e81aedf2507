//! The coordinator driven by scripted destinations: honest ones that ack out
//! of order or repeat themselves, and lying ones that name chunks, batches
//! or files the source never offered.

use super::*;

const CHUNK: u64 = 64 << 10;
/// A file of three chunks, the last one short.
const BIG: u64 = 2 * CHUNK + 10;
const MTIME: i64 = 1_700_000_000_000_000_000;

fn tuning() -> Tuning {
    Tuning {
        chunk_size: CHUNK,
        small_file_limit: 1000,
        batch_files: 2,
        batch_bytes: 1 << 20,
        ..Tuning::default()
    }
}

fn entry(id: u64, size: u64) -> (WireEntry, Arc<CollectionPath>) {
    let name = format!("f{id}");
    let path = Arc::new(CollectionPath::parse(&format!("/src/{name}")).unwrap());
    let entry = WireEntry {
        id,
        path: name.into_bytes(),
        dir: false,
        size,
        mtime_ns: MTIME,
    };
    (entry, path)
}

/// A coordinator whose walk listed `files` (id, size) in one manifest and ended.
fn listed(files: &[(u64, u64)], skip_source_errors: bool) -> Coordinator {
    let mut c = Coordinator::new(tuning(), true, skip_source_errors);
    let entries = files.iter().map(|&(id, size)| entry(id, size)).collect();
    c.on_walk(WalkMessage::Entries(entries)).unwrap();
    c.on_walk(WalkMessage::End).unwrap();
    let actions = c.take_actions();
    assert_eq!(
        actions
            .iter()
            .filter(|a| matches!(a, Action::Listed { .. }))
            .count(),
        files.len()
    );
    assert!(matches!(
        frames(&actions)[..],
        [ToDest::Manifest { .. }, ToDest::ManifestEnd]
    ));
    c
}

fn plan(items: Vec<(u64, PlanItem)>) -> ToSource {
    ToSource::Plan { items }
}

fn send() -> PlanItem {
    PlanItem::Send { have: Vec::new() }
}

fn ack(id: u64, gen: u32, index: u32) -> ToSource {
    ToSource::ChunkAck {
        id,
        gen,
        index,
        ok: true,
    }
}

fn cv(index: u32) -> [u8; 32] {
    [index as u8 + 1; 32]
}

fn frames(actions: &[Action]) -> Vec<&ToDest> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Frame(f) => Some(f),
            _ => None,
        })
        .collect()
}

/// (id, gen, index, expect) of the chunk units among `actions`.
fn chunks(actions: &[Action]) -> Vec<(u64, u32, u32, Option<[u8; 32]>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(Unit::Chunk(c)) => Some((c.id, c.gen, c.index, c.expect)),
            _ => None,
        })
        .collect()
}

fn stats(actions: &[Action]) -> Vec<(u64, u32)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Stat { id, gen, .. } => Some((*id, *gen)),
            _ => None,
        })
        .collect()
}

/// File 1 (three chunks) planned and all its chunks sent: waiting for acks.
fn sending() -> Coordinator {
    let mut c = listed(&[(1, BIG)], false);
    c.on_control(plan(vec![(1, send())])).unwrap();
    let units = chunks(&c.take_actions());
    assert_eq!(units, [(1, 0, 0, None), (1, 0, 1, None), (1, 0, 2, None)]);
    for index in 0..3 {
        c.on_report(Report::ChunkDone {
            id: 1,
            gen: 0,
            index,
            cv: cv(index),
            sent: true,
        })
        .unwrap();
    }
    assert!(c.take_actions().is_empty());
    c
}

fn expected_hash() -> [u8; 32] {
    checksum::file_hash(BIG, CHUNK, &[cv(0), cv(1), cv(2)])
}

/// `sending()` with every chunk acknowledged and the final stat unchanged: `FileEnd` sent.
fn ended() -> Coordinator {
    let mut c = sending();
    for index in 0..3 {
        c.on_control(ack(1, 0, index)).unwrap();
    }
    c.on_stat(1, 0, Ok((BIG, MTIME))).unwrap();
    c.take_actions();
    c
}

fn protocol_error(result: Result<impl std::fmt::Debug, TransferError>, says: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code, FaultCode::ProtocolError, "{err:?}");
    assert!(err.message.contains(says), "{err}");
}

#[test]
fn acks_out_of_order_end_the_file_after_the_last_one() {
    let mut c = sending();
    c.on_control(ack(1, 0, 2)).unwrap();
    c.on_control(ack(1, 0, 0)).unwrap();
    assert!(c.take_actions().is_empty(), "chunk 1 is still outstanding");
    c.on_control(ack(1, 0, 1)).unwrap();
    assert_eq!(stats(&c.take_actions()), [(1, 0)]);

    c.on_stat(1, 0, Ok((BIG, MTIME))).unwrap();
    let actions = c.take_actions();
    let [ToDest::FileEnd {
        id: 1,
        gen: 0,
        size: BIG,
        mtime_ns: MTIME,
        hash,
    }] = frames(&actions)[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(*hash, expected_hash());

    c.on_control(ToSource::FileDone {
        id: 1,
        hash: expected_hash(),
    })
    .unwrap();
    let actions = c.take_actions();
    assert!(matches!(
        &actions[..],
        [
            Action::Done {
                size: BIG,
                checksum: Some(_)
            },
            Action::Frame(ToDest::Finish)
        ]
    ));
    let finished = ToSource::Finished {
        counters: TransferCounters::default(),
        deleted: 0,
    };
    assert!(c.on_control(finished).unwrap().is_some());
}

#[test]
fn repeated_acks_end_the_file_once() {
    let mut c = sending();
    for index in [0, 0, 1, 1, 0] {
        c.on_control(ack(1, 0, index)).unwrap();
    }
    assert!(c.take_actions().is_empty());
    c.on_control(ack(1, 0, 2)).unwrap();
    c.on_control(ack(1, 0, 2)).unwrap();
    assert_eq!(stats(&c.take_actions()), [(1, 0)], "one final stat");
    c.on_stat(1, 0, Ok((BIG, MTIME))).unwrap();
    c.on_control(ack(1, 0, 1)).unwrap();
    let actions = c.take_actions();
    assert_eq!(frames(&actions).len(), 1, "one FileEnd: {actions:?}");

    let done = || ToSource::FileDone {
        id: 1,
        hash: expected_hash(),
    };
    c.on_control(done()).unwrap();
    // The file is gone: confirming it again counts nothing twice.
    protocol_error(c.on_control(done()), "has not ended");
}

#[test]
fn an_ack_past_the_file_is_a_protocol_error_not_a_panic() {
    for ok in [true, false] {
        let mut c = sending();
        let lie = ToSource::ChunkAck {
            id: 1,
            gen: 0,
            index: 3,
            ok,
        };
        protocol_error(c.on_control(lie), "chunk 3 of file 1");
    }
    // The last real chunk is taken.
    let mut c = sending();
    c.on_control(ack(1, 0, 2)).unwrap();
    assert!(c.files[&1].acked[2]);
}

#[test]
fn a_negative_ack_sends_the_chunk_again() {
    let mut c = sending();
    let nack = ToSource::ChunkAck {
        id: 1,
        gen: 0,
        index: 1,
        ok: false,
    };
    c.on_control(nack).unwrap();
    assert_eq!(chunks(&c.take_actions()), [(1, 0, 1, None)]);
    assert!(!c.files[&1].acked[1]);
}

#[test]
fn a_plan_that_does_not_answer_the_manifest_is_a_protocol_error() {
    let big_have = |index| PlanItem::Send {
        have: vec![(index, [0; 32])],
    };
    // The destination claims a chunk past the file's size.
    let mut c = listed(&[(1, BIG)], false);
    protocol_error(
        c.on_control(plan(vec![(1, big_have(3))])),
        "chunk 3 of file 1",
    );
    let mut c = listed(&[(1, BIG)], false);
    c.on_control(plan(vec![(1, big_have(2))])).unwrap();
    assert_eq!(chunks(&c.take_actions())[2], (1, 0, 2, Some([0; 32])));

    let mut c = listed(&[(1, BIG)], false);
    protocol_error(c.on_control(plan(vec![(9, send())])), "file 9");
    let mut c = listed(&[(1, BIG), (2, 10)], false);
    protocol_error(
        c.on_control(plan(vec![(1, send()), (1, send())])),
        "file 1, which is not waiting",
    );
    let mut c = listed(&[(1, BIG), (2, 10)], false);
    protocol_error(c.on_control(plan(vec![(1, send())])), "file 2");
    let mut c = listed(&[(1, BIG)], false);
    c.on_control(plan(vec![(1, send())])).unwrap();
    protocol_error(c.on_control(plan(vec![(1, send())])), "no manifest");
}

#[test]
fn confirmations_of_what_was_not_sent_are_protocol_errors() {
    let mut c = sending();
    let done = ToSource::FileDone {
        id: 1,
        hash: expected_hash(),
    };
    protocol_error(c.on_control(done), "not ended");
    protocol_error(c.on_control(ToSource::FileFailed { id: 1 }), "not ended");
    let mut c = ended();
    let other = ToSource::FileDone {
        id: 1,
        hash: [7; 32],
    };
    protocol_error(c.on_control(other), "another hash");

    let mut c = listed(&[(1, 10), (2, 20)], false);
    c.on_control(plan(vec![(1, send()), (2, send())])).unwrap();
    let stray = ToSource::BatchAck {
        unit: 5,
        results: Vec::new(),
    };
    protocol_error(c.on_control(stray), "batch 5");
    let foreign = ToSource::BatchAck {
        unit: 0,
        results: vec![(3, BatchResult::Done { hash: [0; 32] })],
    };
    protocol_error(c.on_control(foreign), "file 3 in batch 0");
}

#[test]
fn a_destination_that_stops_mid_file_is_not_sent_finish() {
    let mut c = sending();
    c.on_control(ack(1, 0, 0)).unwrap();
    let actions = c.take_actions();
    assert!(stats(&actions).is_empty());
    assert!(frames(&actions).is_empty(), "no FileEnd, no Finish");
    let early = ToSource::Finished {
        counters: TransferCounters::default(),
        deleted: 0,
    };
    protocol_error(c.on_control(early), "finished early");
}

#[test]
fn small_files_travel_in_batches_and_a_mismatch_travels_again() {
    let mut c = listed(&[(1, 10), (2, 20), (3, 30)], false);
    c.on_control(plan(vec![(1, send()), (2, send()), (3, send())]))
        .unwrap();
    let batches: Vec<(u64, Vec<u64>)> = c
        .take_actions()
        .into_iter()
        .filter_map(|a| match a {
            Action::Send(Unit::Batch { unit, files }) => {
                Some((unit, files.iter().map(|f| f.id).collect()))
            }
            _ => None,
        })
        .collect();
    assert_eq!(batches, [(0, vec![1, 2]), (1, vec![3])]);

    let results = vec![
        (1, BatchResult::Done { hash: [1; 32] }),
        (2, BatchResult::Mismatch),
    ];
    c.on_control(ToSource::BatchAck { unit: 0, results })
        .unwrap();
    let actions = c.take_actions();
    assert!(matches!(&actions[0], Action::Done { size: 10, .. }));
    assert!(
        matches!(&actions[1], Action::Send(Unit::Batch { unit: 2, files }) if files[0].id == 2)
    );
    for (unit, id) in [(1, 3), (2, 2)] {
        let results = vec![(id, BatchResult::Done { hash: [1; 32] })];
        c.on_control(ToSource::BatchAck { unit, results }).unwrap();
    }
    let actions = c.take_actions();
    assert!(matches!(
        actions.last(),
        Some(Action::Frame(ToDest::Finish))
    ));
}

#[test]
fn a_file_that_changed_before_its_end_is_read_again_then_given_up() {
    let mut c = sending();
    for index in 0..3 {
        c.on_control(ack(1, 0, index)).unwrap();
    }
    c.take_actions();
    c.on_stat(1, 0, Ok((BIG + 1, MTIME))).unwrap();
    let actions = c.take_actions();
    assert!(matches!(
        &actions[0],
        Action::Event(e) if e.code == FaultCode::FileSizeChanged
    ));
    assert_eq!(chunks(&actions).len(), 3);
    assert!(chunks(&actions).iter().all(|&(_, gen, ..)| gen == 1));
    // Late acks of generation 0 change nothing.
    c.on_control(ack(1, 0, 0)).unwrap();
    assert!(!c.files[&1].acked[0]);

    for skip in [false, true] {
        let mut c = sending();
        c.files.get_mut(&1).unwrap().retries = MAX_CHANGE_RETRIES;
        for index in 0..3 {
            c.on_control(ack(1, 0, index)).unwrap();
        }
        c.skip_source_errors = skip;
        let result = c.on_stat(1, 0, Ok((BIG + 1, MTIME)));
        if skip {
            result.unwrap();
            let actions = c.take_actions();
            let frames = frames(&actions);
            assert!(matches!(
                frames[..],
                [
                    ToDest::Event(_),
                    ToDest::FileSkipped {
                        id: 1,
                        equal: false
                    },
                    ToDest::Finish
                ]
            ));
        } else {
            assert_eq!(result.unwrap_err().code, FaultCode::FileSizeChanged);
        }
    }
}

#[test]
fn a_failed_file_is_sent_again_as_a_new_generation() {
    let mut c = ended();
    c.on_control(ToSource::FileFailed { id: 1 }).unwrap();
    let units = chunks(&c.take_actions());
    assert_eq!(units, [(1, 1, 0, None), (1, 1, 1, None), (1, 1, 2, None)]);
    // A worker's late report of generation 0 is dropped.
    c.on_report(Report::ChunkDone {
        id: 1,
        gen: 0,
        index: 0,
        cv: cv(0),
        sent: false,
    })
    .unwrap();
    assert!(c.files[&1].cvs[0].is_none());
}

#[test]
fn chunks_the_destination_holds_need_no_ack() {
    let mut c = listed(&[(1, BIG)], false);
    let have = vec![(0, cv(0)), (2, cv(2))];
    c.on_control(plan(vec![(1, PlanItem::Send { have })]))
        .unwrap();
    let units = chunks(&c.take_actions());
    assert_eq!(
        units,
        [
            (1, 0, 0, Some(cv(0))),
            (1, 0, 1, None),
            (1, 0, 2, Some(cv(2)))
        ]
    );
    for (index, sent) in [(0, false), (1, true), (2, false)] {
        c.on_report(Report::ChunkDone {
            id: 1,
            gen: 0,
            index,
            cv: cv(index),
            sent,
        })
        .unwrap();
    }
    assert!(stats(&c.take_actions()).is_empty());
    c.on_control(ack(1, 0, 1)).unwrap();
    assert_eq!(stats(&c.take_actions()), [(1, 0)]);
}

#[test]
fn the_walk_waits_while_four_manifests_are_unanswered() {
    let mut c = Coordinator::new(tuning(), true, false);
    for id in 0..4 {
        assert!(c.wants_entries());
        c.on_walk(WalkMessage::Entries(vec![entry(id, 10)]))
            .unwrap();
    }
    assert!(!c.wants_entries());
    c.on_control(plan(vec![(0, PlanItem::Skip { resumed: false })]))
        .unwrap();
    assert!(c.wants_entries());
}
