//! Reusable I/O buffers.
//!
//! The source reads file pieces into buffers that quinn keeps (as [`Bytes`])
//! until the peer acknowledged them. Allocating a fresh, zeroed megabyte per
//! piece costs a memset and page faults on every piece; instead a buffer
//! goes back to its pool when quinn drops the last reference.
//!
//! The destination hands quinn's received pieces ([`Bytes`] from
//! `read_chunk`) straight to `pwritev`, without first copying them into one
//! contiguous buffer.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

/// A bounded pool of equally sized buffers.
pub(crate) struct BufferPool {
    size: usize,
    max_idle: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BufferPool {
    pub(crate) fn new(size: usize, max_idle: usize) -> Arc<Self> {
        Arc::new(BufferPool {
            size,
            max_idle,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// A buffer of `size` bytes (contents unspecified).
    pub(crate) fn take(&self) -> Vec<u8> {
        let reused = self.idle.lock().expect("buffer pool lock").pop();
        reused.unwrap_or_else(|| vec![0u8; self.size])
    }

    /// Wraps the first `len` bytes of `buf`; the buffer comes back to the
    /// pool once every clone of the returned `Bytes` is dropped.
    pub(crate) fn freeze(self: &Arc<Self>, buf: Vec<u8>, len: usize) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            len,
            pool: self.clone(),
        })
    }

    fn put(&self, buf: Vec<u8>) {
        if buf.len() != self.size {
            return;
        }
        let mut idle = self.idle.lock().expect("buffer pool lock");
        if idle.len() < self.max_idle {
            idle.push(buf);
        }
    }
}

struct Pooled {
    buf: Vec<u8>,
    len: usize,
    pool: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

/// Received data as a queue of pieces, cut into files without copying.
#[derive(Default)]
pub(crate) struct Pieces {
    queue: VecDeque<Bytes>,
    len: usize,
}

impl Pieces {
    pub(crate) fn push(&mut self, piece: Bytes) {
        self.len += piece.len();
        self.queue.push_back(piece);
    }

    /// Bytes not taken yet.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The next `n` bytes (fewer if fewer are left), as one or more pieces.
    pub(crate) fn take(&mut self, mut n: usize) -> Vec<Bytes> {
        let mut out = Vec::new();
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                break;
            };
            let piece = if front.len() <= n {
                self.queue.pop_front().expect("front exists")
            } else {
                front.split_to(n)
            };
            n -= piece.len();
            self.len -= piece.len();
            out.push(piece);
        }
        out
    }
}

/// Writes every piece, in order, at `offset` (`pwritev`, retried on short writes).
pub(crate) fn write_all_vectored_at(file: &File, pieces: &[Bytes], offset: u64) -> io::Result<()> {
    // At most IOV_MAX (1024 on Linux) slices per call.
    const MAX_SLICES: usize = 512;
    let mut offset = offset;
    for group in pieces.chunks(MAX_SLICES) {
        let mut slices: Vec<IoSlice<'_>> = group.iter().map(|p| IoSlice::new(p)).collect();
        let mut slices = &mut slices[..];
        while !slices.is_empty() {
            // SAFETY: `IoSlice` is ABI-compatible with `iovec`; the slices
            // borrow live buffers and the count is within IOV_MAX.
            let n = unsafe {
                libc::pwritev(
                    file.as_raw_fd(),
                    slices.as_ptr() as *const libc::iovec,
                    slices.len() as libc::c_int,
                    offset as libc::off_t,
                )
            };
            if n < 0 {
                let error = io::Error::last_os_error();
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(error);
            }
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "pwritev wrote nothing",
                ));
            }
            offset += n as u64;
            IoSlice::advance_slices(&mut slices, n as usize);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn buffers_come_back_and_vectored_writes_land_in_order() {
        let pool = BufferPool::new(16, 4);
        let mut buf = pool.take();
        buf[..5].copy_from_slice(b"hello");
        let bytes = pool.freeze(buf, 5);
        let clone = bytes.clone();
        assert_eq!(&bytes[..], b"hello");
        drop(bytes);
        assert!(pool.idle.lock().unwrap().is_empty());
        drop(clone);
        assert_eq!(pool.idle.lock().unwrap().len(), 1);

        let dir = tempfile::tempdir().unwrap();
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(dir.path().join("f"))
            .unwrap();
        let pieces: Vec<Bytes> = (0..1500u32)
            .map(|i| Bytes::from(vec![(i % 251) as u8; (i % 7 + 1) as usize]))
            .collect();
        write_all_vectored_at(&file, &pieces, 3).unwrap();
        let mut queue = Pieces::default();
        for p in &pieces[..4] {
            queue.push(p.clone()); // 1 + 2 + 3 + 4 bytes
        }
        assert_eq!(queue.len(), 10);
        let taken = queue.take(4);
        assert_eq!(taken.iter().map(Bytes::len).collect::<Vec<_>>(), [1, 2, 1]);
        assert_eq!(queue.len(), 6);
        assert_eq!(queue.take(100).iter().map(Bytes::len).sum::<usize>(), 6);
        let expected: Vec<u8> = pieces.iter().flat_map(|p| p.iter().copied()).collect();
        let mut got = vec![0u8; expected.len()];
        file.read_exact_at(&mut got, 3).unwrap();
        assert_eq!(got, expected);
    }
}
