//! The global allocator: mimalloc, entered by its plain `mi_malloc` / `mi_zalloc` / `mi_realloc`
//! wherever the layout allows, not by its `_aligned` variants for every allocation.
//!
//! Why not `mimalloc::MiMalloc`: that wrapper passes every layout to `mi_malloc_aligned`, whose
//! fast path serves a block only when the first free block of the size class happens to sit at
//! the alignment, checks the power of two first, and otherwise takes the generic aligned path.
//! A request makes about 90 allocations (header maps, `Bytes`, futures, strings), nearly all with
//! an alignment of 8 or less. Under callgrind the aligned entry cost ~60 instructions each and
//! `mi_malloc` ~35: 3.2% of a request's instructions, the bare floor's alike. In CPU time the
//! difference is within this machine's 1% spread (README "Performance").
//!
//! Why the plain entry points are enough for those layouts: mimalloc's size classes are whole
//! machine words and its pages start word-aligned, so every block `mi_malloc` returns is aligned
//! to the word (`WORD`). A larger alignment (a `u128`, a cache-line-aligned struct) still goes
//! through the `_aligned` variants, which are correct for any power of two.
//!
//! The bare Pingora floor (`loadtest/bare_pingora.rs`) uses this allocator too, so that the floor
//! moves with the gateway. Imports: nothing of the gateway.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys::{
    mi_free, mi_malloc, mi_malloc_aligned, mi_realloc, mi_realloc_aligned, mi_zalloc, mi_zalloc_aligned,
};

/// The alignment of every block mimalloc hands out, whatever its size.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc as Rust's global allocator; see the module docs.
pub struct Allocator;

// SAFETY: each method forwards to the mimalloc entry point that returns a block of at least
// `layout.size()` bytes at `layout.align()`: the plain ones for alignments up to `WORD` (every
// mimalloc block is word-aligned), the `_aligned` ones otherwise. `mi_free` frees blocks of
// either kind; `mi_realloc` keeps the block's contents up to the smaller size, as
// `GlobalAlloc::realloc` requires, and its new block is word-aligned like any other.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi_malloc(layout.size()) as *mut u8
        } else {
            mi_malloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            mi_zalloc(layout.size()) as *mut u8
        } else {
            mi_zalloc_aligned(layout.size(), layout.align()) as *mut u8
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        mi_free(ptr as *mut c_void);
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            mi_realloc(ptr as *mut c_void, new_size) as *mut u8
        } else {
            mi_realloc_aligned(ptr as *mut c_void, new_size, layout.align()) as *mut u8
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size a request's allocations take (and past mimalloc's small and medium classes), at
    /// every alignment up to a page: each block is at its alignment, zeroed when asked, and keeps
    /// its bytes across a `realloc` that grows it past its size class and one that shrinks it.
    #[test]
    fn blocks_are_aligned_and_keep_their_bytes_across_realloc() {
        let sizes = (1..=600).chain([1000, 4095, 4096, 8193, 70_000, 300_000]);
        for size in sizes {
            for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
                let layout = Layout::from_size_align(size, align).expect("layout");
                // SAFETY: `layout` has a non-zero size; each block is written within its size,
                // then freed once, with the layout it has at that point.
                unsafe {
                    let zeroed = Allocator.alloc_zeroed(layout);
                    assert!(!zeroed.is_null());
                    assert_eq!(zeroed as usize % align, 0, "alloc_zeroed size {size} align {align}");
                    assert!(std::slice::from_raw_parts(zeroed, size).iter().all(|b| *b == 0));
                    Allocator.dealloc(zeroed, layout);

                    let p = Allocator.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc size {size} align {align}");
                    for i in 0..size {
                        *p.add(i) = (i % 251) as u8;
                    }
                    let grown_size = size * 3 + 17;
                    let grown = Allocator.realloc(p, layout, grown_size);
                    assert!(!grown.is_null());
                    assert_eq!(grown as usize % align, 0, "realloc up from {size} align {align}");
                    assert!((0..size).all(|i| *grown.add(i) == (i % 251) as u8));
                    let grown_layout = Layout::from_size_align(grown_size, align).expect("layout");
                    let shrunk_size = size.div_ceil(2);
                    let shrunk = Allocator.realloc(grown, grown_layout, shrunk_size);
                    assert_eq!(shrunk as usize % align, 0, "realloc down from {grown_size} align {align}");
                    assert!((0..shrunk_size).all(|i| *shrunk.add(i) == (i % 251) as u8));
                    Allocator.dealloc(shrunk, Layout::from_size_align(shrunk_size, align).expect("layout"));
                }
            }
        }
    }
}
