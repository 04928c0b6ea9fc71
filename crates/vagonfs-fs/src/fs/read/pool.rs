//! Buffer pools: memory given back by blocks, segments and replies that are gone, reused for
//! new ones.
//!
//! Subtle cases handled here:
//! - a fresh allocation of 128 KiB or more is a fresh mapping (glibc serves it with `mmap`, or
//!   gives trimmed heap back to the kernel): writing it page-faults on every 4 KiB, measured as
//!   the read path's main CPU cost; pooled memory is warm;
//! - a pool keeps at most `max` buffers, and only buffers of its size (up to twice): what it
//!   holds is part of the read path's fixed overhead (the pools and their bounds:
//!   `segment::pools`, [`REPLY_POOL_MAX`]);
//! - a sealed buffer ([`BufferPool::seal`]) comes back when the last `Bytes` view of it goes.

use bytes::Bytes;

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
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_when_the_last_reference_goes() {
        const POOL_MAX: usize = 16;
        let pool = BufferPool::sized(128 * 1024, POOL_MAX);
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
