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
