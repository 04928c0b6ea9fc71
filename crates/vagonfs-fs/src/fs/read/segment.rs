//! Segments: the blocks a run fetches live in buffers of up to [`SEGMENT_BLOCKS`] blocks
//! (1 MiB, aligned to 1 MiB of the file), filled in order by the run, each block handed out as
//! a view of its segment the moment it is complete. A read spanning consecutive blocks of one
//! segment (the kernel's 1 MiB reads of `dd`/`cp`, 1 MiB-aligned) is answered with one view of
//! the segment instead of a copy into a reply buffer: fuser 0.18's `ReplyData::data` takes one
//! slice, and that copy was 12 % of the daemon's CPU in perf of a fresh 128 MiB read at 0 ms.
//!
//! Subtle cases handled here:
//! - soundness: a segment is written only through its one [`SegmentWriter`], in order, and
//!   only at or after its `filled` mark; views ([`Block`], and the joined views of
//!   [`join`]) only ever cover bytes below that mark, taken from views that exist already. So
//!   no byte is read before it is written or written while a view can see it: the `unsafe`
//!   below relies on this alone;
//! - memory: a segment's buffer goes back to its pool when the writer and the last view are
//!   gone. One cached block keeps its whole segment alive, so the cache evicts segments whole
//!   (`BlockCache::evict_for`): what the cache counts stays what it holds;
//! - a segment's buffer comes from a pool of its size (fresh memory page-faults on every 4 KiB
//!   written: the pools are why a long sequential read runs in warm memory).

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::pool::BufferPool;

/// Unit of fetching and caching, bytes (128 KiB): what a random read fetches at least, and what
/// the kernel asks per read, so that a read is usually one block, handed over without a copy.
pub const BLOCK_SIZE: u64 = 128 * 1024;

/// Blocks per segment (1 MiB): the kernel's largest read.
pub const SEGMENT_BLOCKS: u64 = 8;

/// Full segment buffers kept for reuse (8 MiB): part of the read path's fixed overhead. A
/// sequential reader gives one back for each one it takes (the blocks it leaves behind), so a
/// few are enough to keep its reads in warm memory.
pub(super) const SEGMENT_POOL_MAX: usize = 8;

/// Single-block buffers kept for reuse (4 MiB).
const SINGLE_POOL_MAX: usize = 32;

/// One pool of buffers per segment length in blocks (index `blocks - 1`): single blocks keep
/// [`SINGLE_POOL_MAX`] (random reads), full segments [`SEGMENT_POOL_MAX`] (sequential reads),
/// the lengths in between (the ends of runs) about 512 KiB each: about 16 MiB in all, plus the
/// reply buffers (`pool::REPLY_POOL_MAX`).
pub(super) fn pools() -> Vec<Arc<BufferPool>> {
    (1..=SEGMENT_BLOCKS)
        .map(|n| {
            let max = match n {
                1 => SINGLE_POOL_MAX,
                SEGMENT_BLOCKS => SEGMENT_POOL_MAX,
                n => ((SEGMENT_BLOCKS / 2) / n).max(1) as usize,
            };
            BufferPool::sized((n * BLOCK_SIZE) as usize, max)
        })
        .collect()
}

/// One buffer of consecutive blocks of a file, filled in order by its [`SegmentWriter`].
pub(super) struct Segment {
    ptr: *mut u8,
    /// Bytes the segment holds when full.
    len: usize,
    /// Capacity of the `Vec` the buffer came from (to give it back).
    vec_cap: usize,
    pool: Arc<BufferPool>,
}

// SAFETY: the buffer is owned by the segment; writes go through the one `SegmentWriter` to bytes
// no view covers, reads through views of bytes written before the view was made (module note).
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: `ptr` and `vec_cap` come from a `Vec<u8>` whose ownership the segment took
        // (`SegmentWriter::new`); length 0: nothing to drop, and nobody sees the bytes any more.
        let buf = unsafe { Vec::from_raw_parts(self.ptr, 0, self.vec_cap) };
        self.pool.give(buf);
    }
}

/// The one writer of a segment.
pub(super) struct SegmentWriter {
    seg: Arc<Segment>,
    /// Bytes written so far (views only cover bytes below this).
    filled: usize,
    /// Where the block being written starts.
    block_start: usize,
}

impl SegmentWriter {
    /// A segment of `len` bytes, its buffer taken from `pool` (a fresh one when the pool's are
    /// too small).
    pub(super) fn new(len: usize, pool: &Arc<BufferPool>) -> Self {
        let mut buf = pool.take_for(len);
        if buf.capacity() < len {
            buf.reserve_exact(len);
        }
        let mut buf = std::mem::ManuallyDrop::new(buf);
        let seg = Segment {
            ptr: buf.as_mut_ptr(),
            len,
            vec_cap: buf.capacity(),
            pool: Arc::clone(pool),
        };
        SegmentWriter {
            seg: Arc::new(seg),
            filled: 0,
            block_start: 0,
        }
    }

    /// Whether every byte of the segment is written.
    pub(super) fn is_full(&self) -> bool {
        self.filled == self.seg.len
    }

    /// Write the next bytes of `src` into the block being written, which is `block_len` bytes
    /// long; returns the bytes taken from `src`, and the block when it is complete.
    pub(super) fn fill(&mut self, src: &[u8], block_len: usize) -> (usize, Option<Block>) {
        let block_end = (self.block_start + block_len).min(self.seg.len);
        let n = src.len().min(block_end - self.filled);
        // SAFETY: `filled + n <= seg.len <= capacity`; no view covers bytes at or after
        // `filled` (module note), and `src` is not the segment's memory (views are read-only).
        unsafe {
            std::ptr::copy_nonoverlapping(src.as_ptr(), self.seg.ptr.add(self.filled), n);
        }
        self.filled += n;
        if self.filled < block_end {
            return (n, None);
        }
        let range = self.block_start..self.filled;
        self.block_start = self.filled;
        let block = Block {
            bytes: view(&self.seg, range.clone()),
            origin: Some((Arc::clone(&self.seg), range.start)),
        };
        (n, Some(block))
    }
}

/// A view of written bytes of a segment.
struct View {
    seg: Arc<Segment>,
    range: Range<usize>,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: `range` lies below the segment's `filled` mark when the view was made, and
        // those bytes are never written again (module note).
        unsafe { std::slice::from_raw_parts(self.seg.ptr.add(self.range.start), self.range.len()) }
    }
}

/// Only called with ranges of written bytes (see the callers).
fn view(seg: &Arc<Segment>, range: Range<usize>) -> Bytes {
    debug_assert!(range.end <= seg.len);
    Bytes::from_owner(View {
        seg: Arc::clone(seg),
        range,
    })
}

/// A cached or fetched block: its bytes, and where they live when they are a piece of a segment.
#[derive(Clone)]
pub(crate) struct Block {
    bytes: Bytes,
    origin: Option<(Arc<Segment>, usize)>,
}

impl Block {
    /// A block whose bytes are not part of a segment.
    #[cfg(test)]
    pub(super) fn plain(bytes: Bytes) -> Self {
        Block {
            bytes,
            origin: None,
        }
    }

    pub(super) fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub(super) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether `self` and `other` are pieces of the same segment.
    pub(super) fn same_segment(&self, other: &Block) -> bool {
        match (&self.origin, &other.origin) {
            (Some((a, _)), Some((b, _))) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    /// Where this block's segment begins, counted in blocks from this block (0 when the block
    /// is first), and how many blocks it spans.
    pub(super) fn segment_blocks(&self) -> Option<(u64, u64)> {
        self.origin.as_ref().map(|(seg, at)| {
            (
                *at as u64 / BLOCK_SIZE,
                (seg.len as u64).div_ceil(BLOCK_SIZE),
            )
        })
    }
}

/// Bytes `from..from + len` of the consecutive blocks `parts` (counted from the start of the
/// first), as one view without a copy, when the blocks are consecutive pieces of one segment.
pub(super) fn join(parts: &[Block], from: usize, len: usize) -> Option<Bytes> {
    let (first, rest) = parts.split_first()?;
    let (seg, start) = first.origin.as_ref()?;
    let mut end = start + first.len();
    for part in rest {
        match &part.origin {
            Some((s, at)) if Arc::ptr_eq(s, seg) && *at == end => end += part.len(),
            _ => return None,
        }
    }
    // [start, end) is covered by the views `parts`: written bytes.
    let (a, b) = (
        start.checked_add(from)?,
        start.checked_add(from)?.checked_add(len)?,
    );
    if b > end {
        return None;
    }
    Some(view(seg, a..b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> Arc<BufferPool> {
        BufferPool::sized((SEGMENT_BLOCKS * BLOCK_SIZE) as usize, 2)
    }

    #[test]
    fn blocks_of_a_segment_join_without_a_copy() {
        let pool = pool();
        let bs = BLOCK_SIZE as usize;
        // Three blocks, the last one short (end of file).
        let len = 2 * bs + 100;
        let mut w = SegmentWriter::new(len, &pool);
        let src: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let mut blocks = Vec::new();
        // Fed in chunks that do not line up with the blocks.
        for chunk in src.chunks(7_000) {
            let mut c = chunk;
            while !c.is_empty() {
                let block_len = if blocks.len() == 2 { 100 } else { bs };
                let (n, done) = w.fill(c, block_len);
                c = &c[n..];
                blocks.extend(done);
            }
        }
        assert!(w.is_full());
        assert_eq!(blocks.len(), 3);
        assert_eq!(&blocks[1].bytes()[..], &src[bs..2 * bs]);
        assert!(blocks[0].same_segment(&blocks[2]));
        assert_eq!(blocks[2].segment_blocks(), Some((2, 3)));
        let joined = join(&blocks, 10, 2 * bs).unwrap_or_default();
        assert_eq!(&joined[..], &src[10..10 + 2 * bs]);
        // One view of the segment's memory, not a copy.
        assert_eq!(joined.as_ptr(), blocks[0].bytes()[10..].as_ptr());
        // Past the blocks' bytes: no join.
        assert!(join(&blocks, 10, len).is_none());
        // Not consecutive: no join.
        assert!(join(&[blocks[0].clone(), blocks[2].clone()], 0, 10).is_none());
        assert!(join(&[Block::plain(Bytes::from_static(b"ab"))], 0, 1).is_none());
    }

    #[test]
    fn the_buffer_comes_back_when_writer_and_views_are_gone() {
        let pool = pool();
        let bs = BLOCK_SIZE as usize;
        let mut w = SegmentWriter::new(SEGMENT_BLOCKS as usize * bs, &pool);
        let (_, block) = w.fill(&vec![1u8; bs], bs);
        let block = block.map(|b| b.bytes().slice(1..3));
        drop(w);
        assert_eq!(pool.len(), 0, "a view still holds it");
        assert_eq!(block.as_deref(), Some(&[1u8, 1][..]));
        drop(block);
        assert_eq!(pool.len(), 1);
    }
}
