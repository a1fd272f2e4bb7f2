//! Command-line interface: subcommands, logging set-up and exit codes.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{self, StartError};
use crate::config::{Config, DEFAULT_CONFIG_PATH};

/// Exit codes from sysexits.h, so service managers can tell a bad config
/// (do not restart) from a runtime failure.
const EX_CONFIG: u8 = 78;
const EX_CANTCREAT: u8 = 73;
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(name = "wharf", version, about = "A pull-through caching container registry")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API and the admin port.
    Serve {
        /// TOML config file. Defaults to /etc/wharf/wharf.toml if it exists,
        /// else the embedded defaults (a Docker Hub mirror on :5000).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve(config),
    }
}

fn serve(config_path: Option<PathBuf>) -> ExitCode {
    let path = config_path.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        default.exists().then_some(default)
    });
    let config = match Config::load(path.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wharf: invalid configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logging(&config.log.level);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    match runtime.block_on(app::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("wharf: {e}");
            ExitCode::from(match e {
                StartError::Config(_) => EX_CONFIG,
                StartError::Storage(_) => EX_CANTCREAT,
                StartError::Bind { .. } => EX_UNAVAILABLE,
            })
        }
    }
}

/// `RUST_LOG` wins over `log.level`; plain text, no colours unless stderr
/// is a terminal (journald and log files get clean lines).
fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
