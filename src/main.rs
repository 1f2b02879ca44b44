//! `cheapmodel`: wiring only; see `cli`.
//! Imports: `cli` only.

use clap::Parser;

/// mimalloc (`cheapmodel::allocator`), not the system allocator: Pingora allocates per request
/// (headers, buffers, tasks), and glibc's malloc costs it a measurable share of each request;
/// figures in the README ("Performance") and `loadtest/compare.sh`.
///
/// With the `system-alloc` feature (heap profiling) it stays a plain static, which keeps mimalloc
/// linked for `configure_allocator` and `memory`.
#[cfg_attr(not(feature = "system-alloc"), global_allocator)]
#[cfg_attr(feature = "system-alloc", allow(dead_code))]
static GLOBAL: cheapmodel::allocator::Allocator = cheapmodel::allocator::Allocator;

// mimalloc's C API (linked by `libmimalloc-sys`, through `cheapmodel::allocator`) and libc's `getenv`.
extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn getenv(name: *const std::ffi::c_char) -> *const std::ffi::c_char;
}

/// `mi_option_arena_eager_commit` in mimalloc's `mi_option_t` (the same in its v2 and v3).
const MI_OPTION_ARENA_EAGER_COMMIT: std::ffi::c_int = 4;

/// mimalloc commits each arena whole on systems that overcommit (its default, `2`), so RSS counts
/// memory no request touched: with 1,000 concurrent streams open, 185 KB of RSS per stream against
/// 65 KB with commit on demand, and 25 MB idle against 15 MB, for 1-3% more CPU per request
/// (README "Performance", `loadtest/stream_rss.py`). LLM traffic is many slow concurrent streams,
/// so memory wins. `MIMALLOC_ARENA_EAGER_COMMIT` in the environment still decides.
///
/// It must run before the first allocation (which reserves the first arena, committed or not), so
/// before `main`: an ELF constructor, allocation-free (libc's `getenv`, not `std::env`).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
extern "C" fn configure_allocator() {
    // SAFETY: `getenv` reads the environment with a NUL-terminated name; `mi_option_set` sets one
    // documented option to a documented value. Nothing else runs yet (constructors are serial).
    unsafe {
        if getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

// `.init_array` is ELF's (Linux, where the gateway is deployed); elsewhere mimalloc keeps its
// default.
#[cfg(target_os = "linux")]
#[used]
#[link_section = ".init_array"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = configure_allocator;

fn main() {
    cheapmodel::logger::init();
    let code = cheapmodel::cli::run(cheapmodel::cli::Cli::parse());
    std::process::exit(code);
}
