//! The block cache: an LRU of fixed-size blocks of file contents, bounded in bytes, plus the
//! bytes reserved by fetches in flight.
//!
//! Subtle cases handled here:
//! - blocks are keyed by the file's id *and* its listed size and mtime ([`FileVersion`]), so a
//!   file changed on the server never serves old blocks to a new open;
//! - bytes being fetched are counted from the moment a fetch is granted memory
//!   ([`BlockCache::reserve`]) until its block lands (or the fetch ends), and landing blocks
//!   evict least recently used ones so that cached + in flight stays within the bound;
//! - a block larger than the whole bound is never kept;
//! - a block keeps its whole segment's buffer alive ([`super::segment`]): eviction takes the
//!   other blocks of the evicted block's segment with it, so that the memory comes back.

use std::ops::Range;

use bytes::Bytes;
use lru::LruCache;

use super::FileVersion;
use super::segment::Block;

/// Unit of fetching and caching, bytes (128 KiB): what a random read fetches at least, and what
/// the kernel asks per read, so that a read is usually one block, handed over without a copy.
pub const BLOCK_SIZE: u64 = 128 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct BlockKey {
    pub(super) file: FileVersion,
    pub(super) index: u64,
}

impl BlockKey {
    pub(super) fn range(&self) -> Range<u64> {
        let start = self.index.saturating_mul(BLOCK_SIZE);
        start..start.saturating_add(BLOCK_SIZE).min(self.file.size)
    }

    pub(super) fn len(&self) -> u64 {
        let r = self.range();
        r.end.saturating_sub(r.start)
    }
}

/// The LRU of blocks plus the bytes reserved by fetches in flight.
pub(super) struct BlockCache {
    pub(super) lru: LruCache<BlockKey, Block>,
    pub(super) limit: u64,
    pub(super) cached: u64,
    pub(super) inflight: u64,
    pub(super) peak: u64,
}

impl BlockCache {
    pub(super) fn new(limit: u64) -> Self {
        BlockCache {
            lru: LruCache::unbounded(),
            limit,
            cached: 0,
            inflight: 0,
            peak: 0,
        }
    }

    fn note_peak(&mut self) {
        self.peak = self.peak.max(self.cached + self.inflight);
    }

    /// Evict least recently used blocks until `extra` more bytes fit (or nothing is left),
    /// each with the other blocks of its segment (they share one buffer: evicting one alone
    /// would free nothing).
    fn evict_for(&mut self, extra: u64) {
        while self.cached + self.inflight + extra > self.limit {
            let Some((key, block)) = self.lru.pop_lru() else {
                break;
            };
            self.cached = self.cached.saturating_sub(block.len() as u64);
            self.pop_segment_of(key, &block);
        }
    }

    /// Remove the blocks of `block`'s segment other than `key` (already removed).
    pub(super) fn pop_segment_of(&mut self, key: BlockKey, block: &Block) {
        let Some((pos, count)) = block.segment_blocks() else {
            return;
        };
        let first = key.index.saturating_sub(pos);
        for index in first..first.saturating_add(count) {
            let other = BlockKey { index, ..key };
            if index == key.index || !self.lru.peek(&other).is_some_and(|b| b.same_segment(block)) {
                continue;
            }
            if let Some(b) = self.lru.pop(&other) {
                self.cached = self.cached.saturating_sub(b.len() as u64);
            }
        }
    }

    /// Count `len` bytes about to be fetched (the fetch was granted memory by the budget).
    pub(super) fn reserve(&mut self, len: u64) {
        self.evict_for(len);
        self.inflight += len;
        self.note_peak();
    }

    pub(super) fn release(&mut self, len: u64) {
        self.inflight = self.inflight.saturating_sub(len);
    }

    /// A fetched block lands: its reservation of `reserved` bytes becomes a cached block.
    pub(super) fn land(&mut self, key: BlockKey, block: Block, reserved: u64) {
        self.release(reserved);
        let len = block.len() as u64;
        if len > self.limit {
            return;
        }
        if let Some(old) = self.lru.put(key, block) {
            self.cached = self.cached.saturating_sub(old.len() as u64);
        }
        self.cached += len;
        self.evict_for(0);
        self.note_peak();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_and_reservations() {
        let mut c = BlockCache::new(3 * BLOCK_SIZE);
        let file = FileVersion {
            id: 1,
            size: 10 * BLOCK_SIZE,
            mtime: None,
        };
        let block = || Block::plain(Bytes::from(vec![0u8; BLOCK_SIZE as usize]));
        for index in 0..3 {
            c.reserve(BLOCK_SIZE);
            c.land(BlockKey { file, index }, block(), BLOCK_SIZE);
        }
        assert_eq!(c.cached, 3 * BLOCK_SIZE);
        // Reserving evicts the least recently used.
        c.reserve(BLOCK_SIZE);
        assert_eq!(c.lru.len(), 2);
        assert!(!c.lru.contains(&BlockKey { file, index: 0 }));
        assert_eq!(c.cached + c.inflight, 3 * BLOCK_SIZE);
        c.land(BlockKey { file, index: 3 }, block(), BLOCK_SIZE);
        assert_eq!((c.cached, c.inflight), (3 * BLOCK_SIZE, 0));
        assert!(c.peak <= 3 * BLOCK_SIZE);
        // A block bigger than the bound is not kept.
        let mut tiny = BlockCache::new(10);
        tiny.reserve(BLOCK_SIZE);
        tiny.land(BlockKey { file, index: 0 }, block(), BLOCK_SIZE);
        assert_eq!((tiny.cached, tiny.inflight, tiny.lru.len()), (0, 0, 0));
    }
}

/// Block buffers given back when their last reference goes (evicted and no longer read),
/// reused for new blocks. A fresh 128 KiB allocation is a fresh mapping (glibc serves it with
/// `mmap`, or gives trimmed heap back to the kernel): writing it page-faults on every 4 KiB,
/// which measured as the read path's main CPU cost. Holds at most `max` buffers (the pools and
/// their bounds: `segment::pools`).
pub(super) struct BufferPool {
    free: std::sync::Mutex<Vec<Vec<u8>>>,
    /// Capacity of the buffers handed out (at least).
    size: usize,
    /// Most buffers kept.
    max: usize,
}

/// Reply buffers (a read spanning blocks of several segments is copied into one): their size, and the most
/// kept (8 MiB): part of the read path's fixed overhead. A read larger than this gets a buffer
/// of its own, not kept.
pub(super) const REPLY_BUFFER: usize = 1 << 20;
pub(super) const REPLY_POOL_MAX: usize = 8;

impl BufferPool {
    /// A pool of buffers of `size` bytes, keeping at most `max` of them.
    pub(super) fn sized(size: usize, max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(BufferPool {
            free: std::sync::Mutex::new(Vec::new()),
            size,
            max,
        })
    }

    /// An empty buffer able to hold a block.
    pub(super) fn take(&self) -> Vec<u8> {
        let reused = super::lock(&self.free).pop();
        match reused {
            Some(mut buf) => {
                buf.clear();
                buf
            }
            None => Vec::with_capacity(self.size),
        }
    }

    /// An empty buffer able to hold `len` bytes: a kept one when `len` fits the pool's size.
    pub(super) fn take_for(&self, len: usize) -> Vec<u8> {
        if len > self.size {
            return Vec::with_capacity(len);
        }
        self.take()
    }

    /// A filled buffer as a block: when its last reference is dropped, the buffer comes back.
    pub(super) fn seal(self: &std::sync::Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: std::sync::Arc::clone(self),
        })
    }

    pub(super) fn give(&self, buf: Vec<u8>) {
        if buf.capacity() < self.size || buf.capacity() > self.size * 2 {
            return;
        }
        let mut free = super::lock(&self.free);
        if free.len() < self.max {
            free.push(buf);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        super::lock(&self.free).len()
    }
}

struct Pooled {
    buf: Vec<u8>,
    pool: std::sync::Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod segment_tests {
    use super::super::segment::SegmentWriter;
    use super::*;

    #[test]
    fn eviction_takes_a_segment_whole() {
        let bs = BLOCK_SIZE as usize;
        let file = FileVersion {
            id: 1,
            size: 10 * BLOCK_SIZE,
            mtime: None,
        };
        let pool = BufferPool::sized(4 * bs, 1);
        let mut c = BlockCache::new(6 * BLOCK_SIZE);
        // Blocks 2..6 are one segment; block 0 a block of its own.
        let mut w = SegmentWriter::new(4 * bs, &pool);
        for index in 2..6 {
            c.reserve(BLOCK_SIZE);
            let (_, block) = w.fill(&vec![index as u8; bs], bs);
            if let Some(block) = block {
                c.land(BlockKey { file, index }, block, BLOCK_SIZE);
            }
        }
        drop(w);
        c.reserve(BLOCK_SIZE);
        let lone = Block::plain(Bytes::from(vec![0u8; bs]));
        c.land(BlockKey { file, index: 0 }, lone, BLOCK_SIZE);
        // Block 3 is the least recently used: making room evicts 2..6 together.
        for index in [2, 4, 5, 0] {
            assert!(c.lru.get(&BlockKey { file, index }).is_some());
        }
        c.reserve(2 * BLOCK_SIZE);
        assert_eq!(c.lru.len(), 1);
        assert_eq!(c.cached, BLOCK_SIZE);
        assert_eq!(pool.len(), 1, "the segment's buffer came back");
    }
}

#[cfg(test)]
mod pool_tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_reference_goes() {
        const POOL_MAX: usize = 16;
        let pool = BufferPool::sized(BLOCK_SIZE as usize, POOL_MAX);
        let mut buf = pool.take();
        buf.extend_from_slice(b"hello");
        let ptr = buf.as_ptr();
        let block = pool.seal(buf);
        let view = block.slice(1..3);
        assert_eq!(&view[..], b"el");
        drop(block);
        assert_eq!(pool.len(), 0, "a view still holds it");
        drop(view);
        assert_eq!(pool.len(), 1);
        let again = pool.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), ptr, "the same memory, reused");
        // Never more than POOL_MAX kept.
        let blocks: Vec<Bytes> = (0..POOL_MAX + 5).map(|_| pool.seal(pool.take())).collect();
        drop(blocks);
        assert_eq!(pool.len(), POOL_MAX);
    }
}
