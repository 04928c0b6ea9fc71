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

use lru::LruCache;

use super::FileVersion;
use super::segment::{BLOCK_SIZE, Block};

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
    use bytes::Bytes;

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

#[cfg(test)]
mod segment_tests {
    use bytes::Bytes;

    use super::super::pool::BufferPool;
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
