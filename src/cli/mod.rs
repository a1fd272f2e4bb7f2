//! Command-line interface: subcommands, logging set-up and exit codes.
//! `serve` runs wharf; the admin subcommands (`repository`, `content`,
//! `distribution`, `remote`, `task`, ...) are a client of a running wharf's
//! admin API and never touch its storage directly.
//!
//! - `admin_commands`: the admin subcommands' flags and the request each makes.
//! - `admin_client`: finding the admin port, sending, reading the answer.
//! - `task_wait`: waiting for a background task to finish, with a progress bar.
//! - `output`: tables and field lists for people, pretty JSON for scripts.

mod admin_client;
mod admin_commands;
mod build_commands;
mod export_commands;
mod hash_password;
mod metadata;
mod output;
mod task_wait;

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use http::Method;

use self::admin_client::{AdminClient, AdminError, ADMIN_ENV};
use self::admin_commands::{AdminCommand, UsageError, UserCommand};
use self::task_wait::{Ending, TaskEnded, WaitError};
use self::output::View;
use crate::app::{self, StartError};
use crate::config::{Config, LogConfig, LogFormat, DEFAULT_CONFIG_PATH};

/// Exit codes from sysexits.h, so service managers can tell a bad config
/// (do not restart) from a runtime failure, and scripts can tell "wharf
/// said no" from "wharf is not there".
const EX_USAGE: u8 = 64;
const EX_UNAVAILABLE: u8 = 69;
const EX_SOFTWARE: u8 = 70;
const EX_CANTCREAT: u8 = 73;
const EX_IOERR: u8 = 74;
const EX_CONFIG: u8 = 78;
/// The admin API refused the request (a 4xx with its error JSON), or a
/// task waited for failed.
const EX_REFUSED: u8 = 1;
/// A task waited for was canceled (128 + SIGINT, as for an interrupted
/// command).
const EX_CANCELED: u8 = 130;

#[derive(Parser)]
#[command(name = "wharf", version, about = "A pull-through caching container registry")]
struct Cli {
    /// TOML config file [default: /etc/wharf/wharf.toml if it exists, else
    /// the embedded defaults].
    ///
    /// `serve` runs on it (the embedded defaults are a Docker Hub mirror on
    /// :5000); the admin commands read only server.admin_listen from it.
    #[arg(long, short, global = true, value_name = "FILE", help_heading = "Global options")]
    config: Option<PathBuf>,
    /// The admin API, http://HOST:PORT [default: $WHARF_ADMIN, else
    /// http://<server.admin_listen> from the config].
    #[arg(long, global = true, value_name = "URL", help_heading = "Global options")]
    admin: Option<String>,
    /// Print the admin API's JSON answer, pretty-printed, instead of a table.
    #[arg(long, global = true, help_heading = "Global options")]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the registry API and the admin port.
    Serve,
    /// Work on this node's metadata database (wharf stopped).
    #[command(subcommand)]
    Metadata(metadata::MetadataCommand),
    #[command(flatten)]
    Admin(AdminCommand),
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve => {
            if cli.admin.is_some() || cli.json {
                eprintln!("wharf: --admin and --json apply to the admin commands, not to serve");
                return ExitCode::from(EX_USAGE);
            }
            serve(cli.config)
        }
        Command::Metadata(command) => match metadata::run(&command, config_path(cli.config).as_deref()) {
            Ok(text) => match print(&text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(code) => code,
            },
            Err(failure) => {
                eprintln!("wharf: {}", failure.message);
                ExitCode::from(failure.code)
            }
        },
        Command::Admin(AdminCommand::User(UserCommand::HashPassword)) => match hash_password::run() {
            Ok(line) => {
                print!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("wharf: {e}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::Admin(command) => admin(&command, cli.config, cli.admin.as_deref(), cli.json),
    }
}

/// `--config`, else the default path if that file exists, else None (the
/// embedded defaults).
fn config_path(flag: Option<PathBuf>) -> Option<PathBuf> {
    flag.or_else(|| {
        let default = PathBuf::from(DEFAULT_CONFIG_PATH);
        default.exists().then_some(default)
    })
}

fn serve(config_path_flag: Option<PathBuf>) -> ExitCode {
    let path = config_path(config_path_flag);
    let config = match Config::load(path.as_deref(), std::env::vars()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wharf: invalid configuration: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    init_logging(&config.log);
    // Before any thread exists: the allocator's settings for the server.
    crate::memory::tune();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wharf: cannot start the async runtime: {e}");
            return ExitCode::from(EX_UNAVAILABLE);
        }
    };
    match runtime.block_on(app::run(config, path)) {
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

/// Why an admin command failed; each maps to one exit code.
#[derive(Debug, thiserror::Error)]
enum AdminCommandError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// A task waited for ended failed or canceled; `output` is the
    /// finished task, printed as a successful answer would be.
    #[error("{ended}")]
    TaskEnded { ended: Box<TaskEnded>, output: String },
}

impl AdminCommandError {
    fn exit_code(&self) -> u8 {
        match self {
            AdminCommandError::Usage(_) => EX_USAGE,
            AdminCommandError::Runtime(_) => EX_SOFTWARE,
            AdminCommandError::TaskEnded { ended, .. } => match ended.how {
                Ending::Failed => EX_REFUSED,
                Ending::Canceled => EX_CANCELED,
            },
            AdminCommandError::Admin(e) => match e {
                AdminError::BadUrl(_) => EX_USAGE,
                AdminError::Config { .. } => EX_CONFIG,
                AdminError::Unreachable { .. } | AdminError::NoAnswer { .. } => EX_UNAVAILABLE,
                AdminError::Api { .. } => EX_REFUSED,
                AdminError::Server { .. } | AdminError::Unexpected(_) => EX_SOFTWARE,
            },
        }
    }
}

/// Runs one admin command: the answer on stdout, or one `wharf: ...` line
/// on stderr and an exit code that says whose fault it was.
fn admin(command: &AdminCommand, config_flag: Option<PathBuf>, admin_flag: Option<&str>, json: bool) -> ExitCode {
    let text = match admin_output(command, config_flag, admin_flag, json) {
        Ok(text) => text,
        Err(e) => {
            if let AdminCommandError::TaskEnded { output, .. } = &e {
                // The finished task is the answer; how it ended is the error.
                if let Err(code) = print(output) {
                    return code;
                }
            }
            eprintln!("wharf: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match print(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(code) => code,
    }
}

fn print(text: &str) -> Result<(), ExitCode> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(()),
        // `wharf ... | head` closing the pipe early is not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => {
            eprintln!("wharf: cannot write the output: {e}");
            Err(ExitCode::from(EX_IOERR))
        }
    }
}

fn admin_output(
    command: &AdminCommand,
    config_flag: Option<PathBuf>,
    admin_flag: Option<&str>,
    json: bool,
) -> Result<String, AdminCommandError> {
    // Usage mistakes are reported before any config is read or port dialled.
    let call = admin_commands::plan(command)?;
    let env_url = std::env::var(ADMIN_ENV).ok();
    let url = admin_client::resolve(admin_flag, env_url.as_deref(), || {
        admin_client::admin_listen_from_config(config_path(config_flag).as_deref(), std::env::vars())
    })?;
    // One request at a time: a single-threaded runtime is all it needs.
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(AdminCommandError::Runtime)?;
    let credentials = admin_client::credentials_from_env(
        std::env::var(admin_client::ADMIN_USER_ENV).ok(),
        std::env::var(admin_client::ADMIN_PASSWORD_ENV).ok(),
    )?;
    let client = AdminClient::new(url).with_credentials(credentials);
    if let Some(id) = admin_commands::task_to_wait_for(command) {
        return waited(runtime.block_on(task_wait::wait_for_task(&client, id, true)), &call.view, json);
    }
    if let AdminCommand::Task(admin_commands::TaskCommand::Log { id, follow: true }) = command {
        if !json {
            runtime.block_on(follow_log(&client, *id))?;
            return Ok(String::new());
        }
    }
    let mut reply = match command {
        // The build context is packed and streamed as the request's body.
        AdminCommand::Repository(admin_commands::RepositoryCommand::Build(build)) => {
            let (_, upload) = build.plan()?;
            runtime.block_on(client.send_upload(call.method.clone(), &call.path, "application/x-tar", build_commands::body(upload)))?
        }
        _ => runtime.block_on(async { client.send(call.method.clone(), &call.path, call.body.as_ref()).await })?,
    };
    if admin_commands::waits_for_started_task(command) {
        let Some(id) = reply.value["id"].as_u64() else {
            return Ok(shown(&reply, &call.view, json));
        };
        let result = runtime.block_on(task_wait::wait_for_task(&client, id, true));
        if matches!(command, AdminCommand::Repository(admin_commands::RepositoryCommand::Build(_))) && !json {
            // A build's log (its steps and notes), before the task.
            let path = admin_client::api_path(&["tasks", &id.to_string(), "log"], &[]);
            if let Ok(log) = runtime.block_on(client.send(Method::GET, &path, None)) {
                eprint!("{}", log.value["log"].as_str().unwrap_or_default());
            }
        }
        return waited(result, &call.view, json);
    }
    if let View::Curated { repository } = &call.view {
        if !json && reply.value["version"].is_null() {
            // Nothing changed: the answer has no number, so ask which
            // version the repository stays at.
            let path = admin_client::api_path(&["repositories", repository], &[]);
            let repo = runtime.block_on(client.send(Method::GET, &path, None))?;
            if let Some(answer) = reply.value.as_object_mut() {
                answer.insert("latest_version".into(), repo.value["latest_version"].clone());
            }
        }
    }
    Ok(shown(&reply, &call.view, json))
}

/// Prints a task's log as it grows, until the task has finished.
async fn follow_log(client: &AdminClient, id: u64) -> Result<(), AdminCommandError> {
    let mut offset = 0u64;
    loop {
        let path = admin_client::api_path(&["tasks", &id.to_string(), "log"], &[("offset", offset.to_string())]);
        let reply = client.send(Method::GET, &path, None).await?;
        let chunk = reply.value["log"].as_str().unwrap_or_default();
        if !chunk.is_empty() {
            let mut stdout = std::io::stdout().lock();
            let written = stdout.write_all(chunk.as_bytes()).and_then(|()| stdout.flush());
            if matches!(&written, Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe) {
                return Ok(());
            }
        }
        offset = reply.value["next_offset"].as_u64().unwrap_or(offset);
        if reply.value["finished"].as_bool().unwrap_or(true) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// A finished task as printed; one that failed or was canceled is an error
/// that still carries its printout.
fn waited(
    result: Result<admin_client::Reply, WaitError>,
    view: &output::View,
    json: bool,
) -> Result<String, AdminCommandError> {
    match result {
        Ok(done) => Ok(shown(&done, view, json)),
        Err(WaitError::Admin(e)) => Err(e.into()),
        Err(WaitError::Ended(ended)) => {
            let output = shown(&ended.task, view, json);
            Err(AdminCommandError::TaskEnded { ended: Box::new(ended), output })
        }
    }
}

/// An answer as printed: the API's JSON with `--json`, else `view`.
fn shown(reply: &admin_client::Reply, view: &output::View, json: bool) -> String {
    if json {
        // A 204 has no body: print nothing rather than invent one.
        if reply.raw.is_empty() {
            String::new()
        } else {
            output::pretty_json(&String::from_utf8_lossy(&reply.raw))
        }
    } else {
        output::render(view, &reply.value)
    }
}

/// `RUST_LOG` wins over `log.level`; plain text, no colours unless stderr
/// is a terminal (journald and log files get clean lines).
/// Logs go to stderr (journald takes them from there under systemd): as
/// text for people, coloured on a terminal, or as one JSON object a line,
/// fields at the top level, when `log.format = "json"`.
fn init_logging(log: &LogConfig) {
    let mut filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // The PostgreSQL client logs every statement's parameters at debug,
    // remote credentials among them: kept at info unless asked for by name.
    let asked = std::env::var("RUST_LOG").unwrap_or_else(|_| log.level.clone());
    if !asked.contains("tokio_postgres") {
        if let Ok(directive) = "tokio_postgres=info".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match log.format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
}
