//! The block cache: an LRU of fixed-size blocks of file contents, bounded in bytes, plus the
//! bytes reserved by fetches in flight.
//!
//! Subtle cases handled here:
//! - blocks are keyed by the file's id *and* its listed size and mtime ([`FileVersion`]), so a
//!   file changed on the server never serves old blocks to a new open;
//! - bytes being fetched are counted from the moment a fetch is granted memory
//!   ([`BlockCache::reserve`]) until its block lands (or the fetch ends), and landing blocks
//!   evict least recently used ones so that cached + in flight stays within the bound;
//! - a block larger than the whole bound is never kept.

use std::ops::Range;

use bytes::Bytes;
use lru::LruCache;

use super::FileVersion;

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
    pub(super) lru: LruCache<BlockKey, Bytes>,
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

    /// Evict least recently used blocks until `extra` more bytes fit (or nothing is left).
    fn evict_for(&mut self, extra: u64) {
        while self.cached + self.inflight + extra > self.limit {
            match self.lru.pop_lru() {
                Some((_, bytes)) => self.cached = self.cached.saturating_sub(bytes.len() as u64),
                None => break,
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
    pub(super) fn land(&mut self, key: BlockKey, bytes: Bytes, reserved: u64) {
        self.release(reserved);
        let len = bytes.len() as u64;
        if len > self.limit {
            return;
        }
        if let Some(old) = self.lru.put(key, bytes) {
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
        let block = || Bytes::from(vec![0u8; BLOCK_SIZE as usize]);
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
