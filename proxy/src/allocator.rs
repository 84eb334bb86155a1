//! The process's memory allocator: jemalloc.
//!
//! A request allocates and frees a few dozen blocks (header maps, buffers,
//! strings the filter contract copies); glibc's allocator spent 6% of the
//! four-filter chain's CPU on them, in `_int_malloc`, `_int_free` and
//! consolidation of the 8 KiB read buffers hyper allocates per request.
//! jemalloc costs 3% less CPU per request on that chain with the same RSS
//! (docs/architecture.md has the figures). Declared in the library, so the
//! benches and tests measure the allocator `weft` runs with.

use std::ffi::CStr;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// `arena.<MALLCTL_ARENAS_ALL>.purge`: every arena's unused dirty pages.
const PURGE_ALL_ARENAS: &CStr = c"arena.4096.purge";

/// Gives the pages freed memory occupied back to the system now, instead of
/// after jemalloc's decay delay: compiling filters frees several MiB.
/// Returns whether jemalloc did.
pub fn release_freed_memory() -> bool {
    // SAFETY: a write-less, read-less mallctl on a name jemalloc defines;
    // jemalloc serialises it with allocation itself.
    let status = unsafe {
        tikv_jemalloc_sys::mallctl(
            PURGE_ALL_ARENAS.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    status == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn freed_memory_is_released() {
        let block = vec![1u8; 8 << 20];
        drop(std::hint::black_box(block));
        assert!(super::release_freed_memory());
    }
}
