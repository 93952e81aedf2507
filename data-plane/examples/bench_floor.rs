//! The per-byte cost of what an encrypted, verified transfer must do on
//! this machine, and the wall-clock floor it sets for `bench/transfer.sh`
//! (a) on two cores. Run: `cargo run --release -p lattice-data-plane
//! --example bench_floor [GIB] [--small-files N DIR]` (default 2 GiB).
//!
//! With `--small-files N DIR` it also measures the floor of (b): creating
//! N files of 16 KiB under DIR (a fresh directory on the benchmark's file
//! system, 1,000 files a directory as in the bench) with one thread per
//! core and nothing else (no reading, hashing, encryption or network), and
//! its CPU time from `getrusage`. The files are left in place: removing
//! them would slow the next file creations on ext4 for a minute (see
//! `bench/transfer.sh`), so the caller removes DIR when it is done.
//!
//! Each side of (a) passes every byte through: blake3 (both sides hash),
//! AES-256-GCM (quinn encrypts each packet in place, the peer decrypts),
//! quinn's copy of stream data into a packet (source) or of a datagram into
//! its buffer (destination), and two kernel copies (source: page cache to
//! user, user to socket; destination: socket to user, user to page cache),
//! costed here as `memcpy`. GridFTP does only the kernel copies.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// A QUIC packet's payload at the loopback MTU the engine uses.
const PIECE: usize = 64_960;
const BUFFER: usize = 256 << 20;
const PASSES: usize = 4;

fn seconds_per_byte(mut f: impl FnMut()) -> f64 {
    f(); // warm-up
    let start = Instant::now();
    for _ in 0..PASSES {
        f();
    }
    start.elapsed().as_secs_f64() / (PASSES * BUFFER) as f64
}

/// The size of each of (b)'s files.
const SMALL_FILE: usize = 16 << 10;

struct Args {
    gib: f64,
    small_files: Option<(usize, PathBuf)>,
}

fn parse_args() -> Args {
    let mut args = Args {
        gib: 2.0,
        small_files: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--small-files" {
            let n = it
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--small-files N DIR: N is a number");
            let dir = it.next().expect("--small-files N DIR: DIR is missing");
            args.small_files = Some((n, PathBuf::from(dir)));
        } else {
            args.gib = arg.parse().expect("GIB is a number");
        }
    }
    args
}

/// User + system CPU seconds of this process so far (all threads).
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

/// Creates `count` files of `SMALL_FILE` bytes under `dir` with `threads`
/// threads; returns (wall seconds, CPU seconds).
fn create_small_files(count: usize, dir: &Path, threads: usize) -> (f64, f64) {
    assert!(
        !dir.exists(),
        "{} exists: --small-files needs a fresh directory",
        dir.display()
    );
    let content = vec![0x5au8; SMALL_FILE];
    for d in 0..count.div_ceil(1000) {
        std::fs::create_dir_all(dir.join(format!("d{d:03}"))).expect("create directory");
    }
    let (cpu0, start) = (cpu_seconds(), Instant::now());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let content = &content;
            scope.spawn(move || {
                // Whole directories per thread: two threads creating in one
                // directory queue on its inode lock.
                for i in (0..count).filter(|i| (i / 1000) % threads == t) {
                    let path = dir.join(format!("d{:03}/f{i:06}.bin", i / 1000));
                    let mut file = std::fs::File::create(path).expect("create file");
                    file.write_all(content).expect("write file");
                }
            });
        }
    });
    (start.elapsed().as_secs_f64(), cpu_seconds() - cpu0)
}

fn main() {
    let Args { gib, small_files } = parse_args();
    let mut data = vec![0u8; BUFFER];
    blake3::Hasher::new()
        .update(b"bench_floor")
        .finalize_xof()
        .fill(&mut data);
    let mut out = vec![0u8; BUFFER];

    let hash = seconds_per_byte(|| {
        let mut hasher = blake3::Hasher::new();
        for piece in data.chunks(PIECE) {
            hasher.update(piece);
        }
        black_box(hasher.finalize());
    });
    let hash_aligned = seconds_per_byte(|| {
        let mut hasher = blake3::Hasher::new();
        for piece in data.chunks(1 << 20) {
            hasher.update(piece);
        }
        black_box(hasher.finalize());
    });
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("key"));
    let mut sealed = data.clone();
    let aes = seconds_per_byte(|| {
        for (i, piece) in sealed.chunks_mut(PIECE).enumerate() {
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&(i as u64).to_be_bytes());
            let tag = key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    piece,
                )
                .expect("seal");
            let _ = black_box(tag);
        }
    });
    let copy = seconds_per_byte(|| {
        for (from, to) in data.chunks(PIECE).zip(out.chunks_mut(PIECE)) {
            to.copy_from_slice(from);
        }
        black_box(&out);
    });

    let bytes = gib * (1u64 << 30) as f64;
    // Per side: one hash (at blake3's best, aligned 1 MiB pieces, so the
    // floor is a lower bound), one AEAD pass, one quinn copy, two kernel copies.
    let per_side = hash_aligned + aes + 3.0 * copy;
    println!("per byte on one core ({} B pieces):", PIECE);
    println!(
        "  blake3       {:.3} ns  ({:.1} GB/s)",
        hash * 1e9,
        1e-9 / hash
    );
    println!(
        "  (blake3 in 1 MiB pieces: {:.3} ns, {:.1} GB/s)",
        hash_aligned * 1e9,
        1e-9 / hash_aligned
    );
    println!(
        "  AES-256-GCM  {:.3} ns  ({:.1} GB/s)",
        aes * 1e9,
        1e-9 / aes
    );
    println!(
        "  memcpy       {:.3} ns  ({:.1} GB/s)",
        copy * 1e9,
        1e-9 / copy
    );
    // The two sides run at once, one core each: the wall-clock floor is
    // one side's CPU time.
    println!(
        "{gib} GiB, encrypted and verified: {:.2} CPU s per side, so at least {:.2} s on two cores",
        per_side * bytes,
        per_side * bytes
    );
    println!(
        "  (of which blake3 + AES-GCM: {:.2} CPU s per side; the copies alone: {:.2})",
        (hash_aligned + aes) * bytes,
        3.0 * copy * bytes
    );

    let Some((count, dir)) = small_files else {
        return;
    };
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (wall, cpu) = create_small_files(count, &dir, threads);
    let bytes = (count * SMALL_FILE) as f64;
    // Both sides hash and en/decrypt every byte; at blake3's best rate
    // (16 KiB files are whole aligned pieces), so the floor stays a lower bound.
    let crypto = 2.0 * (hash_aligned + aes) * bytes;
    let cores = threads as f64;
    println!(
        "{count} files of 16 KiB created and written, {threads} threads, nothing else: {wall:.2} s, {cpu:.2} CPU s ({:.0} files/s)",
        count as f64 / wall
    );
    // Creating alone took `wall` with every core free; hashing and
    // encrypting need CPU on top of what creating used.
    let floor = wall.max((cpu + crypto) / cores);
    println!(
        "  + blake3 and AES-GCM on both sides: {crypto:.2} CPU s; floor of an encrypted, verified copy: {floor:.2} s on {cores} cores ({:.0} files/s)",
        count as f64 / floor
    );
}
