//! The guest's memory allocator (wasm32 builds only).
//!
//! Every string of a DCS view that crosses the component boundary is a separate allocation
//! (the host calls the guest's `cabi_realloc` once per string) and is freed again when the call
//! returns; the heartbeat's own work allocates a few small strings and vectors per group too.
//! With Rust's default allocator on wasm32 (dlmalloc) each of those costs tens of
//! nanoseconds; this one serves small blocks from per-size free lists in a few instructions.
//!
//! Blocks up to 512 bytes (align at most 8) come in twelve size classes, carved from 64 KiB
//! chunks taken from the system allocator and kept on a free list per class once freed (the
//! size class is known from the `Layout` on free, so blocks carry no header). Larger or more
//! aligned blocks go to the system allocator. Memory of small blocks is reused, never returned:
//! the guest's linear memory cannot shrink anyway.
//!
//! The component is single-threaded (wasm32 without the atomics feature), so the pools need no
//! lock.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;
use std::ptr;

const CLASSES: [usize; 12] = [8, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512];
const MAX_SMALL: usize = 512;
const MAX_ALIGN: usize = 8;
const CHUNK: usize = 64 * 1024;

/// Class index by `(size + 7) / 8` for sizes 1..=512.
const CLASS_OF: [u8; MAX_SMALL / 8 + 1] = {
    let mut t = [0u8; MAX_SMALL / 8 + 1];
    let mut i = 0;
    while i < t.len() {
        let size = i * 8;
        let mut c = 0;
        while CLASSES[c] < size {
            c += 1;
        }
        t[i] = c as u8;
        i += 1;
    }
    t
};

struct Pools {
    /// Free blocks of each class, linked through their first word.
    free: [*mut u8; CLASSES.len()],
    /// The unused rest of the current chunk.
    next: *mut u8,
    end: *mut u8,
}

pub struct GuestAlloc(UnsafeCell<Pools>);

// SAFETY: wasm32 components run on one thread; nothing else can reach the pools.
unsafe impl Sync for GuestAlloc {}

impl GuestAlloc {
    pub const fn new() -> Self {
        GuestAlloc(UnsafeCell::new(Pools {
            free: [ptr::null_mut(); CLASSES.len()],
            next: ptr::null_mut(),
            end: ptr::null_mut(),
        }))
    }
}

#[inline]
fn class(layout: &Layout) -> Option<usize> {
    if layout.size() <= MAX_SMALL && layout.align() <= MAX_ALIGN {
        Some(CLASS_OF[layout.size().div_ceil(8)] as usize)
    } else {
        None
    }
}

impl Pools {
    #[inline]
    unsafe fn alloc_small(&mut self, c: usize) -> *mut u8 {
        let head = self.free[c];
        if !head.is_null() {
            // SAFETY: a free block holds the next free block's address in its first word.
            self.free[c] = unsafe { *(head as *mut *mut u8) };
            return head;
        }
        let size = CLASSES[c];
        if (self.end as usize) - (self.next as usize) < size {
            // SAFETY: a valid, non-zero layout.
            let chunk =
                unsafe { System.alloc(Layout::from_size_align_unchecked(CHUNK, MAX_ALIGN)) };
            if chunk.is_null() {
                return chunk;
            }
            self.next = chunk;
            // SAFETY: within the chunk just allocated.
            self.end = unsafe { chunk.add(CHUNK) };
        }
        let p = self.next;
        // SAFETY: `size` bytes fit before `end`.
        self.next = unsafe { p.add(size) };
        p
    }

    #[inline]
    unsafe fn free_small(&mut self, p: *mut u8, c: usize) {
        // SAFETY: the block is at least 8 bytes and 8-aligned, and no longer in use.
        unsafe { *(p as *mut *mut u8) = self.free[c] };
        self.free[c] = p;
    }
}

unsafe impl GlobalAlloc for GuestAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            // SAFETY: single-threaded (see above); no other borrow of the pools is live.
            Some(c) => unsafe { (*self.0.get()).alloc_small(c) },
            None => unsafe { System.alloc(layout) },
        }
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        match class(&layout) {
            // SAFETY: `p` came from `alloc` with this layout, hence from this class.
            Some(c) => unsafe { (*self.0.get()).free_small(p, c) },
            None => unsafe { System.dealloc(p, layout) },
        }
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees a valid layout for the new size.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        match (class(&layout), class(&new_layout)) {
            (Some(a), Some(b)) if a == b => p,
            (None, None) => unsafe { System.realloc(p, layout, new_size) },
            _ => {
                let q = unsafe { self.alloc(new_layout) };
                if !q.is_null() {
                    // SAFETY: both blocks hold at least the smaller size and do not overlap.
                    unsafe {
                        ptr::copy_nonoverlapping(p, q, layout.size().min(new_size));
                        self.dealloc(p, layout);
                    }
                }
                q
            }
        }
    }
}

#[global_allocator]
static GLOBAL: GuestAlloc = GuestAlloc::new();
