//! Sequential-read detection of one open handle, and the prefetch window it drives.
//!
//! Subtle cases handled here:
//! - the kernel's asynchronous readahead sends neighbouring reads out of order, so a read
//!   starting within [`SEQ_SLACK`] of where the previous one ended still counts as sequential;
//! - the window (blocks kept fetched ahead of the reader) starts at [`INITIAL_WINDOW_BLOCKS`]
//!   and grows [`WINDOW_GROWTH`]-fold each time the reader comes within three quarters of a
//!   window of the prefetched edge (at half, the reader met the edge before the new runs'
//!   first bytes: measured together with the start below), up to the cap the reader gives (at
//!   most [`MAX_WINDOW_BLOCKS`], and half the block cache), so it covers bandwidth × round
//!   trip after a few round trips (4 growth steps from 512 KiB to 64 MiB; doubling took 7,
//!   each at least one round trip: at 20 ms a 128 MiB file was mostly read while the window
//!   was still small);
//! - a first read at offset 0 starts the window at once (whole-file readers start there, and
//!   waiting for the second read cost one round trip); a random reader that happens to start at
//!   0 pays one initial window, then its next read is a jump. A first read at 0 of at least
//!   [`STREAM_HINT`] bytes is the kernel's readahead for a reader asking big reads (`dd bs=1M`,
//!   `cp`): its window starts at [`STREAM_START_WINDOW`] (32 MiB), skipping the first three
//!   growth steps. Such a reader reads at ~1 GB/s from a server near by: at 20 ms a window of
//!   8 MiB is read in less than one round trip, so the reads stalled ~20 ms at 9 MiB and again
//!   at 37 MiB while the window grew (measured: 0.67–0.72× curl for 256 MiB, 0.78–0.83 with
//!   this start, [`super::PREFETCH_CONCURRENCY`] 8 and the growth at three quarters). The cost:
//!   a reader that stops early after a big first read at 0 leaves up to 32 MiB fetched for
//!   nothing (8 MiB before). A small first read (`head -c 1`, `file`, a random reader's 4 KiB)
//!   keeps the small window;
//! - a jump resets the window: a random read fetches only the blocks it touches.

use std::ops::Range;

use super::segment::BLOCK_SIZE;

/// First prefetch window of a sequential reader, in blocks (512 KiB).
pub const INITIAL_WINDOW_BLOCKS: u64 = 4;

/// Largest prefetch window, in blocks (64 MiB); also capped at half the block cache.
pub const MAX_WINDOW_BLOCKS: u64 = 512;

/// How much the window grows at each step while the reader keeps up with it.
pub const WINDOW_GROWTH: u64 = 4;

/// A first read at offset 0 at least this large starts the window at [`STREAM_START_WINDOW`].
pub const STREAM_HINT: u64 = 256 * 1024;

/// First window of a reader whose first read is at 0 and at least [`STREAM_HINT`] (32 MiB).
pub const STREAM_START_WINDOW: u64 = 256;

/// A read starting this close to where the previous one ended still counts as sequential.
pub const SEQ_SLACK: u64 = 1 << 20;

#[derive(Debug, Default)]
pub(super) struct SeqState {
    /// Reads seen so far.
    reads: u64,
    /// Where the previous read ended.
    next: u64,
    /// Current prefetch window, blocks; 0 = not streaming.
    pub(super) window: u64,
    /// First block not yet prefetched.
    ra_next: u64,
    /// The blocks of this stream before this one were handed to the kernel and released from
    /// the block cache (it starts where the stream started: blocks cached before it, by random
    /// reads, are not the stream's to release).
    pub(super) released_to: u64,
}

impl SeqState {
    /// Account for a read of `offset..end` and answer the blocks to prefetch.
    pub(super) fn on_read(
        &mut self,
        offset: u64,
        end: u64,
        nblocks: u64,
        max_window: u64,
    ) -> Range<u64> {
        let first = self.reads == 0;
        let continues = if first {
            offset == 0
        } else {
            offset.abs_diff(self.next) <= SEQ_SLACK
        };
        self.reads += 1;
        self.next = self.next.max(end);
        if !continues || max_window == 0 {
            self.next = end;
            self.window = 0;
            self.ra_next = 0;
            self.released_to = 0;
            return 0..0;
        }
        let after = end.saturating_sub(1) / BLOCK_SIZE + 1;
        let ahead = self.ra_next.saturating_sub(after);
        if self.window == 0 {
            // A new stream: it releases only what it reads itself, never blocks read before it.
            self.released_to = offset / BLOCK_SIZE;
            let start = if first && end - offset >= STREAM_HINT {
                STREAM_START_WINDOW
            } else {
                INITIAL_WINDOW_BLOCKS
            };
            self.window = start.min(max_window);
        } else if ahead > self.window - self.window / 4 {
            // Still well ahead of the reader.
            return 0..0;
        } else {
            self.window = (self.window * WINDOW_GROWTH).min(max_window);
        }
        let from = self.ra_next.max(after);
        let to = after.saturating_add(self.window).min(nblocks);
        self.ra_next = self.ra_next.max(to);
        from..to.max(from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_grows_while_sequential_and_resets_on_a_jump() {
        let mut s = SeqState::default();
        let n = 100_000;
        let step = 128 * 1024;
        // A first read at 0 starts the window at once.
        assert_eq!(s.on_read(0, step, n, 512), 1..5);
        let mut windows = vec![s.window];
        let mut off = step;
        while off < 2000 * BLOCK_SIZE {
            let r = s.on_read(off, off + step, n, 512);
            if !r.is_empty() {
                windows.push(s.window);
            }
            off += step;
        }
        assert_eq!(&windows[..5], &[4, 16, 64, 256, 512]);
        assert!(windows.iter().all(|&w| w <= 512));
        // A jump: no prefetch, window reset.
        let far = 90_000 * BLOCK_SIZE;
        assert_eq!(s.on_read(far, far + 10, n, 512), 0..0);
        assert_eq!(s.window, 0);
    }

    #[test]
    fn a_big_first_read_at_zero_starts_a_big_window() {
        let mut s = SeqState::default();
        // dd bs=1M: the kernel's first read is 1 MiB (8 blocks).
        assert_eq!(
            s.on_read(0, 8 * BLOCK_SIZE, 100_000, 512),
            8..8 + STREAM_START_WINDOW
        );
        assert_eq!(s.window, STREAM_START_WINDOW);
        // Capped by the cache like any window.
        let mut small = SeqState::default();
        assert_eq!(small.on_read(0, STREAM_HINT, 100_000, 16), 2..18);
        // A big first read elsewhere than 0 is no hint.
        let mut elsewhere = SeqState::default();
        assert_eq!(
            elsewhere.on_read(BLOCK_SIZE, BLOCK_SIZE + STREAM_HINT, 100, 512),
            0..0
        );
    }

    #[test]
    fn a_first_read_elsewhere_than_zero_waits_for_a_second() {
        let mut s = SeqState::default();
        let at = 7 * BLOCK_SIZE;
        assert_eq!(s.on_read(at, at + 4096, 100, 512), 0..0);
        assert_eq!(s.window, 0);
        assert_eq!(s.on_read(at + 4096, at + 8192, 100, 512), 8..12);
    }

    #[test]
    fn window_respects_cap_and_file_end() {
        let mut s = SeqState::default();
        let r = s.on_read(0, 10, 3, 8);
        assert_eq!(r, 1..3, "never past the last block");
        let mut none = SeqState::default();
        none.on_read(0, 10, 3, 0);
        assert_eq!(none.on_read(10, 20, 3, 0), 0..0, "no window with no cache");
    }
}
