//! `wharf repository build`: the build context packed here (its
//! `.containerignore` applied) and streamed to the admin API as a tar, the
//! build then waited for as a task with the step it is at, and its log
//! printed. Planning is pure, as for the other admin commands.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use clap::Args;
use http::Method;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

use super::admin_client::{api_path, RequestBody};
use super::admin_commands::{Call, UsageError};
use super::output::View;

#[derive(Args, Debug)]
pub(crate) struct RepositoryBuild {
    /// The push repository the image goes into (created if the name is free).
    #[arg(long, value_name = "NAME")]
    name: String,
    /// The Containerfile [default: Containerfile (or Dockerfile) in the context].
    #[arg(long, value_name = "FILE")]
    containerfile: Option<PathBuf>,
    /// The build context: a directory, packed with its .containerignore
    /// (or .dockerignore) applied.
    #[arg(long, value_name = "DIR", default_value = ".")]
    context: PathBuf,
    /// A tag for the image (repeat for more) [default: latest].
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// NAME=VALUE for an ARG (repeat for more).
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    build_args: Vec<String>,
    /// os/arch[/variant], comma-separated for an index over one image each
    /// [default: the node's].
    #[arg(long, value_name = "PLATFORMS")]
    platform: Option<String>,
    /// The stage to build [default: the last].
    #[arg(long, value_name = "STAGE")]
    target: Option<String>,
    /// Print the task and return at once instead of waiting for it.
    #[arg(long)]
    pub(crate) no_wait: bool,
}

/// What a build uploads: the context directory, and the Containerfile's
/// text when it lies outside the context.
pub(crate) struct Upload {
    pub(crate) context: PathBuf,
    pub(crate) containerfile: Option<String>,
}

impl RepositoryBuild {
    /// The request (its body is the upload) and what to upload.
    pub(crate) fn plan(&self) -> Result<(Call, Upload), UsageError> {
        let mut query: Vec<(&str, String)> = Vec::new();
        if !self.tags.is_empty() {
            query.push(("tags", self.tags.join(",")));
        }
        if !self.build_args.is_empty() {
            let mut args = serde_json::Map::new();
            for a in &self.build_args {
                let (k, v) = a.split_once('=').ok_or_else(|| UsageError(format!("--build-arg {a:?}: expected NAME=VALUE")))?;
                args.insert(k.to_owned(), serde_json::Value::String(v.to_owned()));
            }
            query.push(("build_args", serde_json::Value::Object(args).to_string()));
        }
        if let Some(p) = &self.platform {
            query.push(("platform", p.clone()));
        }
        if let Some(t) = &self.target {
            query.push(("target", t.clone()));
        }
        let mut containerfile = None;
        if let Some(file) = &self.containerfile {
            match inside(&self.context, file) {
                Some(rel) => query.push(("containerfile", rel)),
                None => {
                    let text = std::fs::read_to_string(file).map_err(|e| UsageError(format!("--containerfile {}: {e}", file.display())))?;
                    containerfile = Some(text);
                }
            }
        }
        if !self.context.is_dir() {
            return Err(UsageError(format!("--context {}: not a directory", self.context.display())));
        }
        let path = api_path(&["repositories", &self.name, "build"], &query);
        let call = Call { method: Method::POST, path, body: None, view: View::Task };
        Ok((call, Upload { context: self.context.clone(), containerfile }))
    }
}

/// `file`'s path inside `context`, if it is there.
fn inside(context: &Path, file: &Path) -> Option<String> {
    let (context, file) = (context.canonicalize().ok()?, file.canonicalize().ok()?);
    file.strip_prefix(&context).ok().map(|rel| rel.display().to_string())
}

/// A writer into the request body's channel.
struct ChannelWriter(tokio::sync::mpsc::Sender<std::io::Result<Bytes>>);

impl std::io::Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.blocking_send(Ok(Bytes::copy_from_slice(buf))).map_err(|_| std::io::Error::other("the upload stopped"))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The upload as a request body: the context packed on a thread of its
/// own, 256 KiB at a time, never whole in memory.
pub(crate) fn body(upload: Upload) -> RequestBody {
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(8);
    std::thread::spawn(move || {
        let errors = tx.clone();
        let out = std::io::BufWriter::with_capacity(256 << 10, ChannelWriter(tx));
        if let Err(e) = crate::build::pack::pack(&upload.context, upload.containerfile.as_deref(), u64::MAX, out) {
            let _ = errors.blocking_send(Err(std::io::Error::other(format!("packing {}: {e}", upload.context.display()))));
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item.map(Frame::data), rx)) });
    StreamBody::new(stream).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        build: RepositoryBuild,
    }

    #[test]
    fn flags_become_the_query_and_a_containerfile_outside_the_context_travels_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = dir.path().join("src");
        std::fs::create_dir(&ctx).unwrap();
        std::fs::write(ctx.join("Containerfile.prod"), "FROM scratch\n").unwrap();
        std::fs::write(dir.path().join("Outside"), "FROM scratch\nCOPY a /a\n").unwrap();
        let parse = |args: &[&str]| Cli::try_parse_from(std::iter::once("build").chain(args.iter().copied())).unwrap().build.plan();
        let c = ctx.display().to_string();
        let inner = ctx.join("Containerfile.prod").display().to_string();
        let (call, upload) = parse(&[
            "--name", "team/tool", "--context", &c, "--containerfile", &inner, "--tag", "1.4", "--tag", "latest",
            "--build-arg", "VERSION=1.4", "--platform", "linux/arm64", "--target", "final",
        ])
        .unwrap();
        assert_eq!(call.method, Method::POST);
        assert!(call.path.starts_with("/api/v1/repositories/team%2Ftool/build?"), "{}", call.path);
        for part in ["tags=1.4%2Clatest", "build_args=%7B%22VERSION%22%3A%221.4%22%7D", "platform=linux%2Farm64", "target=final", "containerfile=Containerfile.prod"] {
            assert!(call.path.contains(part), "{part} in {}", call.path);
        }
        assert!(upload.containerfile.is_none(), "inside the context: named, not sent twice");
        let outside = dir.path().join("Outside").display().to_string();
        let (call, upload) = parse(&["--name", "a", "--context", &c, "--containerfile", &outside]).unwrap();
        assert!(!call.path.contains("containerfile="));
        assert_eq!(upload.containerfile.as_deref(), Some("FROM scratch\nCOPY a /a\n"));
        assert!(parse(&["--name", "a", "--context", &c, "--build-arg", "NOEQUALS"]).is_err());
        assert!(parse(&["--name", "a", "--context", "/nonexistent/dir"]).is_err());
    }
}
