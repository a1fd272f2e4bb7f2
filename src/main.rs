//! The `wharf` binary: parse the command line, set up logging, load the
//! config, and hand over to the library. No logic lives here.

use std::process::ExitCode;

fn main() -> ExitCode {
    wharf::cli::main()
}
