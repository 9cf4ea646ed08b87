//! The `mailgate` command: argument parsing, then the library's CLI ([`mailgate::cli`]).
//!
//! Invoked as `sendmail` (a link to the binary) it behaves as `mailgate send`.

use clap::Parser;
use std::process::ExitCode;

/// mimalloc: per-thread caches instead of glibc's arenas (see docs/performance.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args();
    let program = args.next().unwrap_or_default();
    if std::path::Path::new(&program)
        .file_name()
        .is_some_and(|n| n == "sendmail")
    {
        let config = std::env::var_os("MAILGATE_CONFIG").map(Into::into);
        return mailgate::cli::send::run(&args.collect::<Vec<_>>(), config);
    }
    mailgate::cli::run(mailgate::cli::args::Cli::parse())
}
