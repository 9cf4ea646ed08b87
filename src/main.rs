//! The `mailgate` command: argument parsing, then the library's CLI ([`mailgate::cli`]).
//!
//! Invoked as `sendmail` it will behave as `mailgate send` (the submission issue).

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: per-thread caches instead of glibc's arenas (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    mailgate::cli::run(mailgate::cli::args::Cli::parse())
}
