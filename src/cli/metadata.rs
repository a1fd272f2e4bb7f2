//! `wharf metadata migrate --to postgres://...`: moves a stopped node's
//! SQLite metadata into PostgreSQL (see `metadata::migrate`). Unlike the
//! admin commands it works on the files of this machine, not through a
//! running wharf.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use crate::config::{redact_url, Config};
use crate::metadata::{self, MetadataError};

#[derive(Subcommand)]
pub(crate) enum MetadataCommand {
    /// Copy this node's SQLite metadata (<storage.path>/wharf.db) into an
    /// empty PostgreSQL database and verify the copy: row counts of every
    /// table and a hash of every repository version's content. Stop wharf
    /// first. Interrupted, it leaves the target empty; run it again.
    Migrate(Migrate),
}

#[derive(Args)]
pub(crate) struct Migrate {
    /// The PostgreSQL database: postgres://USER@HOST[:PORT]/DATABASE, or a
    /// libpq key=value string (host=/run/postgresql user=wharf dbname=wharf).
    #[arg(long, value_name = "URL")]
    to: String,
    /// A file holding the database user's password (else the URL's, or
    /// none).
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// CA certificates (PEM) to trust besides the system's, for a URL with
    /// sslmode=require.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
}

/// Why the command failed, and the exit code that says so.
pub(crate) struct Failure {
    pub(crate) message: String,
    pub(crate) code: u8,
}

pub(crate) fn run(command: &MetadataCommand, config_path: Option<&Path>) -> Result<String, Failure> {
    let MetadataCommand::Migrate(args) = command;
    let fail = |code: u8, message: String| Failure { message, code };
    let config = Config::load(config_path, std::env::vars())
        .map_err(|e| fail(super::EX_CONFIG, format!("invalid configuration: {e}")))?;
    if let Some(url) = &config.metadata.url {
        return Err(fail(
            super::EX_CONFIG,
            format!("this node's metadata is already in PostgreSQL ([metadata] url = {}); nothing to migrate", redact_url(url)),
        ));
    }
    let source = config.storage.path.join(metadata::DATABASE_FILE);
    if !source.is_file() {
        return Err(fail(super::EX_CONFIG, format!("no SQLite metadata at {}", source.display())));
    }
    let password = match &args.password_file {
        None => None,
        Some(file) => Some(
            std::fs::read_to_string(file)
                .map_err(|e| fail(super::EX_CONFIG, format!("--password-file {}: {e}", file.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
        ),
    };
    let target = metadata::db::postgres::Target::parse(&args.to, password.as_deref(), 2, args.ca_file.as_deref())
        .map_err(|e| fail(super::EX_USAGE, format!("--to: {e}")))?;
    eprintln!("wharf: copying {} into {}", source.display(), redact_url(&args.to));
    let report = metadata::migrate::migrate(&source, target, &mut |line| eprintln!("wharf: {line}")).map_err(|e| {
        let code = match e {
            MetadataError::Conflict(_) => super::EX_REFUSED,
            MetadataError::Invalid(_) => super::EX_USAGE,
            MetadataError::NotFound(_) | MetadataError::Database(_) | MetadataError::Unavailable(_) => super::EX_UNAVAILABLE,
        };
        fail(code, format!("metadata migration failed: {e}"))
    })?;
    let rows: u64 = report.tables.iter().map(|(_, n)| n).sum();
    let done = if report.already_there {
        "the target already held this node's metadata; nothing copied".to_owned()
    } else {
        format!("copied {rows} rows in {} tables", report.tables.len())
    };
    Ok(format!(
        "{done}; verified {} repository versions.\nNext: set [metadata] url = \"{}\" (and password_file) in the config, then start wharf.\n",
        report.versions_verified,
        redact_url(&args.to)
    ))
}
