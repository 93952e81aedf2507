//! The per-byte cost of what an encrypted, verified transfer must do on
//! this machine, and the wall-clock floor it sets for `bench/transfer.sh`
//! (a) on two cores. Run: `cargo run --release -p lattice-data-plane
//! --example bench_floor [GIB]` (default 2).
//!
//! Each side of (a) passes every byte through: blake3 (both sides hash),
//! AES-256-GCM (quinn encrypts each packet in place, the peer decrypts),
//! quinn's copy of stream data into a packet (source) or of a datagram into
//! its buffer (destination), and two kernel copies (source: page cache to
//! user, user to socket; destination: socket to user, user to page cache),
//! costed here as `memcpy`. GridFTP does only the kernel copies.
#![allow(clippy::print_stdout)]

use std::hint::black_box;
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

fn main() {
    let gib: f64 = std::env::args()
        .nth(1)
        .map_or(2.0, |a| a.parse().expect("GIB is a number"));
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
}
