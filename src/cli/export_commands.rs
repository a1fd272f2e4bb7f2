//! `wharf export`: exports for air-gapped sites through the admin API
//! (create as a task, list, show, delete). Planning is pure, as for the
//! other admin commands.

use clap::{Args, Subcommand};
use http::Method;
use serde_json::{Map, Value};

use super::admin_client::api_path;
use super::admin_commands::{Call, Page, UsageError};
use super::output::View;

#[derive(Subcommand, Debug)]
pub(crate) enum ExportCommand {
    /// Write repository versions into a directory on the node as an OCI
    /// image layout in a tar, with a table of contents, as a task. Waits
    /// for it with its progress unless --no-wait.
    Create(ExportCreate),
    /// List the exports, newest first.
    List {
        #[command(flatten)]
        page: Page,
    },
    /// Show one export: its state, directory, versions and size.
    Show {
        #[arg(long)]
        id: u64,
    },
    /// Forget an export; its files stay unless --files.
    Delete {
        #[arg(long)]
        id: u64,
        /// Also delete the export's directory and files.
        #[arg(long)]
        files: bool,
    },
}

#[derive(Args, Debug)]
pub(crate) struct ExportCreate {
    /// A repository to export (repeat for more), at its latest version
    /// unless --version names another.
    #[arg(long = "repository", required = true, value_name = "NAME")]
    repositories: Vec<String>,
    /// NAME=N: export version N of repository NAME.
    #[arg(long = "version", value_name = "NAME=N")]
    versions: Vec<String>,
    /// An existing directory on the node wharf runs on (absolute): the
    /// export goes into a new directory wharf-export-<id> in it.
    #[arg(long)]
    path: String,
    /// Build on export ID: leave out what it and the exports it builds on
    /// carried.
    #[arg(long, value_name = "ID")]
    since: Option<u64>,
    /// Split the archive into files of at most this size (e.g. 1GiB; at
    /// least 1MiB).
    #[arg(long, value_name = "SIZE")]
    chunk_size: Option<String>,
    /// Print the task and return at once instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
}

/// `wharf import`: an export into this wharf.
#[derive(Args, Debug)]
pub(crate) struct ImportArgs {
    /// The export's directory (wharf-export-<id>) on the node wharf runs
    /// on (absolute).
    #[arg(long)]
    path: String,
    /// FROM=TO: import repository FROM under the name TO (repeat for more).
    #[arg(long = "repository-map", value_name = "FROM=TO")]
    repository_map: Vec<String>,
    /// Check the whole export and print what an import would create and
    /// the space it needs; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print the task and return at once instead of waiting for it.
    #[arg(long)]
    no_wait: bool,
}

impl ImportArgs {
    /// Whether the command starts a task and then waits for it.
    pub(crate) fn waits(&self) -> bool {
        !self.dry_run && !self.no_wait
    }

    pub(crate) fn plan(&self) -> Result<Call, UsageError> {
        let mut map = Map::new();
        for m in &self.repository_map {
            let (from, to) = m.split_once('=').ok_or_else(|| UsageError(format!("--repository-map {m:?}: FROM=TO")))?;
            if from.is_empty() || to.is_empty() {
                return Err(UsageError(format!("--repository-map {m:?}: FROM=TO")));
            }
            map.insert(from.to_owned(), to.into());
        }
        let mut body = Map::new();
        body.insert("path".into(), self.path.clone().into());
        if !map.is_empty() {
            body.insert("repository_map".into(), Value::Object(map));
        }
        if self.dry_run {
            body.insert("dry_run".into(), true.into());
        }
        Ok(Call {
            method: Method::POST,
            path: api_path(&["imports"], &[]),
            body: Some(Value::Object(body)),
            view: if self.dry_run { View::ImportPlan } else { View::Task },
        })
    }
}

impl ExportCommand {
    /// Whether the command starts a task and then waits for it.
    pub(crate) fn waits(&self) -> bool {
        matches!(self, ExportCommand::Create(ExportCreate { no_wait: false, .. }))
    }

    pub(crate) fn plan(&self) -> Result<Call, UsageError> {
        Ok(match self {
            ExportCommand::Create(create) => Call {
                method: Method::POST,
                path: api_path(&["exports"], &[]),
                body: Some(create_body(create)?),
                view: View::Task,
            },
            ExportCommand::List { page } => Call {
                method: Method::GET,
                path: api_path(&["exports"], &page.query()),
                body: None,
                view: View::Exports,
            },
            ExportCommand::Show { id } => Call {
                method: Method::GET,
                path: api_path(&["exports", &id.to_string()], &[]),
                body: None,
                view: View::Export,
            },
            ExportCommand::Delete { id, files } => Call {
                method: Method::DELETE,
                path: api_path(&["exports", &id.to_string()], &if *files { vec![("files", "true".to_owned())] } else { vec![] }),
                body: None,
                view: View::Deleted { what: "export", name: id.to_string() },
            },
        })
    }
}

fn create_body(c: &ExportCreate) -> Result<Value, UsageError> {
    let mut versions = Map::new();
    for v in &c.versions {
        let (name, n) = v.split_once('=').ok_or_else(|| UsageError(format!("--version {v:?}: NAME=N")))?;
        let n: u64 = n.parse().map_err(|_| UsageError(format!("--version {v:?}: {n:?} is not a version number")))?;
        if !c.repositories.iter().any(|r| r == name) {
            return Err(UsageError(format!("--version {v:?}: {name:?} is not one of the --repository names")));
        }
        versions.insert(name.to_owned(), n.into());
    }
    let mut body = Map::new();
    body.insert("repositories".into(), c.repositories.clone().into());
    if !versions.is_empty() {
        body.insert("versions".into(), Value::Object(versions));
    }
    body.insert("path".into(), c.path.clone().into());
    if let Some(since) = c.since {
        body.insert("since".into(), since.into());
    }
    if let Some(size) = &c.chunk_size {
        let bytes = crate::config::parse_size("--chunk-size", size).map_err(|e| UsageError(e.to_string()))?;
        body.insert("chunk_size".into(), bytes.into());
    }
    Ok(Value::Object(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(subcommand)]
        command: ExportCommand,
    }

    fn plan(args: &[&str]) -> Result<Call, UsageError> {
        let cli = Cli::try_parse_from(std::iter::once("export").chain(args.iter().copied())).unwrap();
        cli.command.plan()
    }

    #[test]
    fn export_flags_become_the_api_request() {
        let call = plan(&[
            "create", "--repository", "docker.io/library/debian", "--repository", "foo", "--version", "foo=3",
            "--path", "/mnt/transfer", "--since", "4", "--chunk-size", "1GiB",
        ])
        .unwrap();
        assert_eq!((call.method, call.path.as_str(), call.view), (Method::POST, "/api/v1/exports", View::Task));
        assert_eq!(
            call.body.unwrap(),
            serde_json::json!({"repositories": ["docker.io/library/debian", "foo"], "versions": {"foo": 3},
                "path": "/mnt/transfer", "since": 4, "chunk_size": 1u64 << 30})
        );
        let call = plan(&["delete", "--id", "7", "--files"]).unwrap();
        assert_eq!((call.method, call.path.as_str()), (Method::DELETE, "/api/v1/exports/7?files=true"));
        assert_eq!(plan(&["show", "--id", "7"]).unwrap().path, "/api/v1/exports/7");
        assert_eq!(plan(&["list", "--limit", "5"]).unwrap().path, "/api/v1/exports?limit=5");
        for bad in [&["create", "--repository", "a", "--version", "b=1", "--path", "/x"][..], &["create", "--repository", "a", "--version", "a", "--path", "/x"], &["create", "--repository", "a", "--path", "/x", "--chunk-size", "lots"]] {
            assert!(plan(bad).is_err(), "{bad:?}");
        }
    }
}
