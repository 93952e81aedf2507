//! Fault-injection hooks for tests (set through `with_test_hooks`, which
//! exists only with the `testsuite` feature). Paths are relative to the
//! transfer root.

use std::sync::Arc;

type ChunkPredicate = Arc<dyn Fn(&str, u32) -> bool + Send + Sync>;
type ChunkCallback = Arc<dyn Fn(&str, u32) + Send + Sync>;
pub(crate) type FileCallback = Arc<dyn Fn(&str) + Send + Sync>;

#[derive(Clone, Default)]
pub struct TestHooks {
    /// Source: return true to flip a byte of this chunk on the wire (after it was hashed).
    pub corrupt_chunk: Option<ChunkPredicate>,
    /// Source: called after chunk `index` of a file was read and sent.
    pub after_chunk_sent: Option<ChunkCallback>,
    /// Source: called right before a file is opened to be read (a small
    /// file of a batch, or each chunk of a large one).
    pub before_read: Option<FileCallback>,
}

impl std::fmt::Debug for TestHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestHooks")
            .field("corrupt_chunk", &self.corrupt_chunk.is_some())
            .field("after_chunk_sent", &self.after_chunk_sent.is_some())
            .field("before_read", &self.before_read.is_some())
            .finish()
    }
}
