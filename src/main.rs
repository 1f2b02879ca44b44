//! `cheapmodel`: wiring only; see `cli`.

use clap::Parser;

/// mimalloc, not the system allocator: Pingora allocates per request (headers, buffers, tasks),
/// and glibc's malloc costs it a measurable share of each request; figures in the README
/// ("Performance") and `loadtest/compare.sh`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let code = cheapmodel::cli::run(cheapmodel::cli::Cli::parse());
    std::process::exit(code);
}
