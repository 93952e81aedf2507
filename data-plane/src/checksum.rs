//! blake3 of files sent in parallel chunks.
//!
//! BLAKE3 is a tree hash: with a power-of-two chunk size (a multiple of
//! 1 KiB), each chunk at offset `i * chunk_size` is a complete subtree whose
//! chaining value can be computed on its own, by whichever side and thread
//! reads it, and the chaining values merge into exactly `blake3::hash(file)`.
//! So both sides hash every byte once, as they read or receive it, compare
//! per chunk (a mismatch re-sends one chunk) and still record the standard
//! blake3 of the whole file (what `b3sum` prints).

use blake3::hazmat::{self, ChainingValue, HasherExt, Mode};

/// Number of chunks of a file (an empty file is one empty chunk).
pub(crate) fn chunk_count(size: u64, chunk_size: u64) -> u32 {
    size.div_ceil(chunk_size).max(1) as u32
}

/// Byte length of chunk `index`.
pub(crate) fn chunk_len(size: u64, chunk_size: u64, index: u32) -> u64 {
    let start = index as u64 * chunk_size;
    size.saturating_sub(start).min(chunk_size)
}

/// A hasher for chunk `index` of a `size`-byte file.
pub(crate) fn chunk_hasher(size: u64, chunk_size: u64, index: u32) -> blake3::Hasher {
    let mut hasher = blake3::Hasher::new();
    if chunk_count(size, chunk_size) > 1 {
        hasher.set_input_offset(index as u64 * chunk_size);
    }
    hasher
}

/// The chunk's value: the chaining value, or the root hash for a one-chunk file.
pub(crate) fn finish_chunk(hasher: &blake3::Hasher, size: u64, chunk_size: u64) -> [u8; 32] {
    if chunk_count(size, chunk_size) > 1 {
        hasher.finalize_non_root()
    } else {
        *hasher.finalize().as_bytes()
    }
}

/// blake3 hashes 16 chunks of 1 KiB at once (AVX-512) when a piece starts on
/// a 16 KiB boundary and spans whole 16 KiB blocks; quinn's received pieces
/// (~65,000 bytes on loopback, ~1,400 on most links) start anywhere, and
/// fed as they are the hasher works through their ragged edges a chunk or a
/// block at a time: 3.7 instead of 4.5 GB/s for 65,000-byte pieces, 1.6
/// instead of 3.9 GB/s for 8,000-byte ones (one core of the 2-vCPU bench
/// machine, 2026-12-06; `examples/bench_floor.rs` times the first two).
const ALIGN: usize = 16 << 10;

/// Feeds a hasher whole 16 KiB-aligned blocks, whatever the pieces it is
/// given: a piece's aligned middle is hashed in place, only its edges are
/// copied into a carry block. The wrapped hasher must start at an offset
/// that is a multiple of 16 KiB (a chunk's start is); the hash is the same
/// as feeding every piece straight to it.
pub(crate) struct PieceHasher {
    hasher: blake3::Hasher,
    carry: Vec<u8>,
}

impl PieceHasher {
    pub(crate) fn new(hasher: blake3::Hasher) -> Self {
        PieceHasher {
            hasher,
            carry: Vec::new(),
        }
    }

    pub(crate) fn update(&mut self, mut data: &[u8]) {
        if !self.carry.is_empty() {
            let n = (ALIGN - self.carry.len()).min(data.len());
            self.carry.extend_from_slice(&data[..n]);
            data = &data[n..];
            if self.carry.len() < ALIGN {
                return;
            }
            self.hasher.update(&self.carry);
            self.carry.clear();
        }
        let whole = data.len() / ALIGN * ALIGN;
        if whole > 0 {
            self.hasher.update(&data[..whole]);
        }
        if whole < data.len() {
            if self.carry.capacity() == 0 {
                self.carry.reserve_exact(ALIGN);
            }
            self.carry.extend_from_slice(&data[whole..]);
        }
    }

    /// The hasher with everything given so far.
    pub(crate) fn flushed(&mut self) -> &blake3::Hasher {
        if !self.carry.is_empty() {
            self.hasher.update(&self.carry);
            self.carry.clear();
        }
        &self.hasher
    }
}

/// Merges every chunk's value into the file's blake3.
pub(crate) fn file_hash(size: u64, chunk_size: u64, chunks: &[[u8; 32]]) -> [u8; 32] {
    debug_assert_eq!(chunks.len() as u32, chunk_count(size, chunk_size));
    if chunks.len() == 1 {
        return chunks[0];
    }
    merge(chunks, 0, chunks.len(), size, chunk_size, true)
}

fn merge(
    chunks: &[[u8; 32]],
    lo: usize,
    hi: usize,
    size: u64,
    chunk_size: u64,
    root: bool,
) -> ChainingValue {
    if hi - lo == 1 {
        return chunks[lo];
    }
    let start = lo as u64 * chunk_size;
    let end = (hi as u64 * chunk_size).min(size);
    let left_chunks = (hazmat::left_subtree_len(end - start) / chunk_size) as usize;
    let left = merge(chunks, lo, lo + left_chunks, size, chunk_size, false);
    let right = merge(chunks, lo + left_chunks, hi, size, chunk_size, false);
    if root {
        *hazmat::merge_subtrees_root(&left, &right, Mode::Hash).as_bytes()
    } else {
        hazmat::merge_subtrees_non_root(&left, &right, Mode::Hash)
    }
}

/// Hex form used in reports.
pub(crate) fn to_hex(hash: &[u8; 32]) -> String {
    hex::encode(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn piece_hasher_matches_blake3_for_any_pieces() {
        let data: Vec<u8> = (0..300_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let want = *blake3::hash(&data).as_bytes();
        // Piece sizes: datagram-like, tiny, exactly aligned, and mixed.
        let patterns: [&[usize]; 6] = [
            &[64_960],
            &[1_400],
            &[1],
            &[16_384],
            &[16_383, 16_385],
            &[7, 40_000, 3, 16_384, 99_999],
        ];
        for sizes in patterns {
            let mut h = PieceHasher::new(blake3::Hasher::new());
            let (mut at, mut i) = (0, 0);
            while at < data.len() {
                let n = sizes[i % sizes.len()].min(data.len() - at);
                h.update(&data[at..at + n]);
                at += n;
                i += 1;
            }
            assert_eq!(*h.flushed().finalize().as_bytes(), want, "{sizes:?}");
        }
        // A chunk of a multi-chunk file (input offset), fed in ragged pieces.
        let (size, chunk_size) = (4 * 65_536u64 + 5, 65_536u64);
        let file: Vec<u8> = data[..size as usize].to_vec();
        let cv = |i: u32, pieces: usize| {
            let start = (i as u64 * chunk_size) as usize;
            let part = &file[start..start + chunk_len(size, chunk_size, i) as usize];
            let mut h = PieceHasher::new(chunk_hasher(size, chunk_size, i));
            for piece in part.chunks(pieces) {
                h.update(piece);
            }
            finish_chunk(h.flushed(), size, chunk_size)
        };
        let chunks: Vec<[u8; 32]> = (0..chunk_count(size, chunk_size))
            .map(|i| cv(i, 1_399))
            .collect();
        assert_eq!(
            file_hash(size, chunk_size, &chunks),
            *blake3::hash(&file).as_bytes()
        );
        let mut empty = PieceHasher::new(blake3::Hasher::new());
        assert_eq!(empty.flushed().finalize(), blake3::hash(b""));
    }

    fn chunked(data: &[u8], chunk_size: u64) -> [u8; 32] {
        let size = data.len() as u64;
        let chunks: Vec<[u8; 32]> = (0..chunk_count(size, chunk_size))
            .map(|i| {
                let start = (i as u64 * chunk_size) as usize;
                let len = chunk_len(size, chunk_size, i) as usize;
                let mut h = chunk_hasher(size, chunk_size, i);
                h.update(&data[start..start + len]);
                finish_chunk(&h, size, chunk_size)
            })
            .collect();
        file_hash(size, chunk_size, &chunks)
    }

    #[test]
    fn chunked_hash_equals_blake3_of_the_whole() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
        for chunk_size in [1024u64, 4096, 16384] {
            for len in [
                0usize, 1, 1023, 1024, 1025, 4096, 5000, 16384, 16385, 40_000, 65_536, 70_000,
            ] {
                assert_eq!(
                    chunked(&data[..len], chunk_size),
                    *blake3::hash(&data[..len]).as_bytes(),
                    "len {len} chunk {chunk_size}"
                );
            }
        }
    }
}
