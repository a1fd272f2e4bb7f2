//! The `wharf` binary: parse the command line, set up logging, load the
//! config, and hand over to the library. No logic lives here.

use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    wharf::cli::main()
}
