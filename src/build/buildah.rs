//! `RUN` through buildah (`[build] runner = "buildah"`): a Containerfile
//! the native builder cannot run is handed to buildah, boxed in:
//!
//! - its bases come from wharf (resolved as the native builder resolves
//!   them, written into an OCI layout, loaded into a storage of the
//!   build's own under the names the Containerfile uses), and buildah is
//!   told never to pull;
//! - every buildah process runs in PID and network namespaces of its own
//!   (`unshare`): no network unless `[build] network = true`, and killing
//!   it on a time-out or an over-size build kills everything it started;
//! - its result is read back from an OCI layout, every layer through
//!   verified ingest.
//!
//! Blocking: runs on the blocking pool.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::exec::{seconds_of, Bases, BuildError, Built, Options, Plan};
use super::layout;
use super::parse::{Containerfile, Kind};
use super::words;
use crate::storage::Storage;

/// How often the build's disk use is measured against its bound.
const SIZE_CHECK: Duration = Duration::from_secs(2);

/// The bounds on one build.
#[derive(Debug, Clone)]
pub(crate) struct Bounds {
    /// When the build is stopped (the whole build, every platform's).
    pub(crate) deadline: Instant,
    /// What `deadline` came from, for the error.
    pub(crate) timeout: Duration,
    /// Bytes the build's own directory may grow to (buildah's storage
    /// and the result), and that the result's layers may have.
    pub(crate) max_output_size: u64,
    /// Whether `RUN` may reach the network (the host's).
    pub(crate) network: bool,
}

/// One build handed to buildah.
pub(crate) struct Buildah<'a> {
    pub(crate) context: &'a Path,
    /// A directory of this build's own, on the objects' filesystem.
    pub(crate) work: &'a Path,
    pub(crate) storage: &'a Storage,
    pub(crate) bases: &'a dyn Bases,
    pub(crate) options: Options,
    pub(crate) bounds: Bounds,
    /// The Containerfile's text, as sent.
    pub(crate) containerfile: &'a str,
    /// Hears each step as it starts (`STEP 3/7: RUN ...`) and every line
    /// buildah prints.
    pub(crate) log: &'a (dyn Fn(&str) + Sync),
}

/// The line of the first `RUN` in the stages `file`'s target needs.
pub(crate) fn first_run(file: &Containerfile, options: &Options) -> Option<usize> {
    let plan = Plan::new(file, options).ok()?;
    plan.needed.iter().flat_map(|&k| plan.stages[k].iter()).find(|i| matches!(i.kind, Kind::Run { .. })).map(|i| i.line)
}

/// Whether the stages `file`'s target needs have a `RUN`.
pub(crate) fn needs_runner(file: &Containerfile, options: &Options) -> bool {
    first_run(file, options).is_some()
}

/// The images a plan names that are neither `scratch` nor a stage of
/// its own: `FROM` images and `COPY --from` images, with their lines.
fn external_images(plan: &Plan<'_>) -> Result<Vec<(usize, String)>, BuildError> {
    let lookup = |n: &str| plan.global.get(n).cloned();
    let mut out: Vec<(usize, String)> = Vec::new();
    for &k in &plan.needed {
        for i in plan.stages[k] {
            let named = match &i.kind {
                Kind::From { image, .. } => image,
                Kind::Copy(c) | Kind::Add(c) => match &c.from {
                    Some(f) => f,
                    None => continue,
                },
                _ => continue,
            };
            let name = words::word(named, '\\', &lookup).map_err(|e| BuildError::At { line: i.line, message: e.to_string() })?;
            let lower = name.to_ascii_lowercase();
            let is_stage = plan.names[..k].iter().any(|n| n.as_deref() == Some(lower.as_str())) || lower.parse::<usize>().is_ok_and(|n| n < k);
            if name != "scratch" && !is_stage && !out.iter().any(|(_, n)| *n == name) {
                out.push((i.line, name));
            }
        }
    }
    Ok(out)
}

/// The effective user of this process is root.
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines().find_map(|l| l.strip_prefix("Uid:")).and_then(|l| l.split_whitespace().nth(1)).is_some_and(|euid| euid == "0")
    })
}

/// What stopped a buildah process, when it did not succeed.
enum Stopped {
    Failed(String),
    TimedOut,
    TooLarge,
}

impl Buildah<'_> {
    pub(crate) fn run(&self, file: &Containerfile) -> Result<Built, BuildError> {
        let other = BuildError::Other;
        if !running_as_root() {
            return Err(other(
                "the buildah runner needs wharf to run as root: each build runs in PID and network namespaces of its own".into(),
            ));
        }
        for note in &file.notes {
            (self.log)(note);
        }
        let plan = Plan::new(file, &self.options)?;
        let p = &self.options.platform;
        let dir = self.work.join(format!("buildah-{}-{}{}", p.os, p.architecture, p.variant.as_deref().map(|v| format!("-{v}")).unwrap_or_default()));
        let layout_dir = dir.join("bases");
        std::fs::create_dir_all(&layout_dir).map_err(|e| other(format!("{}: {e}", layout_dir.display())))?;
        let io = |e: std::io::Error| other(format!("{}: {e}", dir.display()));
        let files = Files::write(&dir, self.containerfile).map_err(io)?;

        // The bases, from wharf: buildah is never allowed to pull.
        let mut newest_base: Option<u64> = None;
        let mut names = Vec::new();
        for (n, (line, reference)) in external_images(&plan)?.into_iter().enumerate() {
            let at = |m: String| BuildError::At { line, message: format!("{reference}: {m}") };
            let base = self.bases.resolve(&reference, p).map_err(at)?;
            layout::add_base(&layout_dir, &base, self.bases, &format!("base-{n}")).map_err(at)?;
            let created = serde_json::from_slice::<serde_json::Value>(&base.config)
                .ok()
                .and_then(|c| c["created"].as_str().and_then(seconds_of));
            newest_base = newest_base.max(created);
            names.push((line, reference));
        }
        for (n, (line, reference)) in names.iter().enumerate() {
            let at = |m: String| BuildError::At { line: *line, message: format!("{reference}: {m}") };
            // Relative (buildah runs in `dir`): the image is named after
            // the path, which must be a valid lowercase name.
            let source = format!("oci:bases:base-{n}");
            let id = self.buildah(&files, &["pull", "--quiet", "--signature-policy", &files.policy, &source], false, None).map_err(|s| at(self.stopped(s, "")))?;
            let id = id.lines().last().unwrap_or_default().trim().to_owned();
            // A digest reference finds the image by its digest; a tag is
            // needed for the name all the same.
            let name = match reference.split_once('@') {
                Some((name, _)) => format!("{name}:wharf-base-{n}"),
                None => reference.clone(),
            };
            self.buildah(&files, &["tag", &id, &name], false, None).map_err(|s| at(self.stopped(s, "")))?;
        }

        let epoch = self.options.source_date_epoch.or(newest_base).unwrap_or(0).to_string();
        let platform = p.to_string();
        let iidfile = dir.join("iid").display().to_string();
        let containerfile = files.containerfile.clone();
        let context = self.context.display().to_string();
        let mut args: Vec<&str> = vec![
            "bud", "--signature-policy", &files.policy, "--isolation", "chroot", "--pull=never", "--identity-label=false", "--format", "oci",
            "--no-cache", "--timestamp", &epoch, "--platform", &platform, "--iidfile", &iidfile, "-f", &containerfile,
        ];
        let build_args: Vec<String> = self.options.build_args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        for a in &build_args {
            args.extend(["--build-arg", a.as_str()]);
        }
        if let Some(t) = &self.options.target {
            args.extend(["--target", t.as_str()]);
        }
        if self.bounds.network {
            args.extend(["--network", "host"]);
        }
        args.push(&context);
        let mut step = Step { plan: &plan, at: 0 };
        if let Err(s) = self.buildah(&files, &args, self.bounds.network, Some(&mut step)) {
            let message = self.stopped(s, &step.describe());
            return Err(match step.instruction_line() {
                Some(line) => BuildError::At { line, message },
                None => other(message),
            });
        }
        let id = std::fs::read_to_string(&iidfile).map_err(|e| other(format!("buildah wrote no image id: {e}")))?;
        let out = dir.join("out");
        let dest = format!("oci:{}:image", out.display());
        self.buildah(&files, &["push", "--signature-policy", &files.policy, "--format", "oci", id.trim(), &dest], false, None)
            .map_err(|s| other(self.stopped(s, "")))?;
        (self.log)("storing the image buildah made");
        let (manifest, config) = layout::import(&out, self.storage, self.work, self.bounds.max_output_size).map_err(other)?;
        Ok(Built { config, manifest, platform: p.clone() })
    }

    /// The error for a buildah run that stopped, at `step` if known.
    fn stopped(&self, s: Stopped, step: &str) -> String {
        let at = if step.is_empty() { String::new() } else { format!(" at {step}") };
        match s {
            Stopped::Failed(why) => why,
            Stopped::TimedOut => format!("the build ran longer than [build] timeout ({}){at}: stopped", humantime::format_duration(self.bounds.timeout)),
            Stopped::TooLarge => format!("the build grew past [build] max_output_size ({} bytes){at}: stopped", self.bounds.max_output_size),
        }
    }

    /// Runs `buildah args` in the build's namespaces, its output heard
    /// line by line (`step` translating its steps into the build's), its
    /// standard output returned.
    fn buildah(&self, files: &Files, args: &[&str], network: bool, mut step: Option<&mut Step<'_, '_>>) -> Result<String, Stopped> {
        let mut cmd = Command::new("unshare");
        cmd.args(["--pid", "--fork", "--kill-child"]);
        if !network {
            cmd.arg("--net");
        }
        cmd.arg("--").arg("buildah").args(args);
        cmd.current_dir(&files.dir).env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()))
            .env("HOME", &files.home)
            .env("TMPDIR", &files.tmp)
            .env("CONTAINERS_STORAGE_CONF", &files.storage_conf)
            .env("CONTAINERS_REGISTRIES_CONF", &files.registries_conf)
            .env("CONTAINERS_CONF", &files.containers_conf)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| {
            Stopped::Failed(if e.kind() == std::io::ErrorKind::NotFound {
                "unshare (util-linux) is not installed: the buildah runner needs it".into()
            } else {
                format!("cannot start buildah: {e}")
            })
        })?;
        let (tx, rx) = mpsc::channel::<(bool, String)>();
        let readers: Vec<_> = [child.stdout.take().map(|o| (false, Box::new(o) as Box<dyn std::io::Read + Send>)), child.stderr.take().map(|e| (true, Box::new(e) as Box<dyn std::io::Read + Send>))]
            .into_iter()
            .flatten()
            .map(|(is_err, r)| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(r).lines() {
                        let Ok(line) = line else { break };
                        if tx.send((is_err, line)).is_err() {
                            break;
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let (mut stdout, mut last_error, mut stopped) = (String::new(), String::new(), None);
        // Every line: kept (standard output), remembered (the last error),
        // and logged (a step as the build's own).
        let mut hear = |is_err: bool, line: String| {
            if is_err && !line.trim().is_empty() {
                last_error = line.clone();
            }
            match step.as_deref_mut().and_then(|s| s.translate(&line)) {
                Some(translated) => (self.log)(&translated),
                // An image id, read by the caller.
                None if args.first() == Some(&"pull") && !is_err => {}
                None => (self.log)(&line),
            }
            if !is_err {
                stdout.push_str(&line);
                stdout.push('\n');
            }
        };
        let mut next_size_check = Instant::now() + SIZE_CHECK;
        let status = loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok((is_err, line)) => {
                    hear(is_err, line);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Both pipes closed: the process is ending; wait, not spin.
                Err(mpsc::RecvTimeoutError::Disconnected) => std::thread::sleep(Duration::from_millis(50)),
            }
            if let Ok(Some(status)) = child.try_wait() {
                break status;
            }
            let now = Instant::now();
            if now >= self.bounds.deadline {
                stopped = Some(Stopped::TimedOut);
            } else if now >= next_size_check {
                next_size_check = now + SIZE_CHECK;
                if disk_use(self.work) > self.bounds.max_output_size {
                    stopped = Some(Stopped::TooLarge);
                }
            }
            if stopped.is_some() {
                // SIGKILL to unshare; --kill-child takes buildah with it,
                // and with it its PID namespace: everything it started.
                let _ = child.kill();
                let _ = child.wait();
                break std::process::ExitStatus::default();
            }
        };
        for r in readers {
            let _ = r.join();
        }
        while let Ok((is_err, line)) = rx.try_recv() {
            hear(is_err, line);
        }
        if let Some(s) = stopped {
            return Err(s);
        }
        if status.success() {
            Ok(stdout)
        } else {
            let why = last_error.trim().trim_start_matches("Error: ").to_owned();
            Err(Stopped::Failed(if why.is_empty() { format!("buildah {} failed ({status})", args.first().unwrap_or(&"")) } else { why }))
        }
    }
}

/// Bytes of regular files under `dir` (symlinks not followed).
fn disk_use(dir: &Path) -> u64 {
    let mut total = 0;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                todo.push(e.path());
            } else if meta.is_file() {
                total += meta.len();
            }
        }
    }
    total
}

/// Translates buildah's `[2/3] STEP 1/4: ...` into the build's own step
/// count, which names the Containerfile's line when a step fails.
struct Step<'p, 'f> {
    plan: &'p Plan<'f>,
    at: usize,
}

impl Step<'_, '_> {
    fn translate(&mut self, line: &str) -> Option<String> {
        let rest = match line.strip_prefix('[') {
            Some(r) => r.split_once("] ")?.1,
            None => line,
        };
        let rest = rest.strip_prefix("STEP ")?;
        let (count, text) = rest.split_once(": ")?;
        let (n, _) = count.split_once('/')?;
        n.parse::<usize>().ok()?;
        self.at += 1;
        Some(format!("STEP {}/{}: {text}", self.at, self.plan.total.max(self.at)))
    }

    fn instruction_line(&self) -> Option<usize> {
        self.plan.step(self.at).map(|i| i.line)
    }

    fn describe(&self) -> String {
        match self.plan.step(self.at) {
            Some(i) => format!("STEP {}/{}: {}", self.at, self.plan.total, i.text),
            None => String::new(),
        }
    }
}

/// The files that keep buildah to this build: its own storage, no
/// registry to search, every image accepted (they all come from wharf's
/// verified content).
struct Files {
    dir: PathBuf,
    home: PathBuf,
    tmp: PathBuf,
    storage_conf: PathBuf,
    registries_conf: PathBuf,
    containers_conf: PathBuf,
    policy: String,
    containerfile: String,
}

impl Files {
    fn write(dir: &Path, containerfile: &str) -> std::io::Result<Files> {
        let (home, tmp) = (dir.join("home"), dir.join("tmp"));
        std::fs::create_dir_all(&home)?;
        std::fs::create_dir_all(&tmp)?;
        let storage_conf = dir.join("storage.conf");
        let quote = |p: &Path| serde_json::to_string(&p.display().to_string()).unwrap_or_default();
        std::fs::write(
            &storage_conf,
            format!("[storage]\ndriver = \"vfs\"\ngraphroot = {}\nrunroot = {}\n", quote(&dir.join("root")), quote(&dir.join("run"))),
        )?;
        let registries_conf = dir.join("registries.conf");
        std::fs::write(&registries_conf, "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n")?;
        let containers_conf = dir.join("containers.conf");
        std::fs::write(&containers_conf, "")?;
        let policy = dir.join("policy.json");
        std::fs::write(&policy, r#"{"default":[{"type":"insecureAcceptAnything"}]}"#)?;
        let file = dir.join("Containerfile");
        std::fs::write(&file, containerfile)?;
        Ok(Files {
            dir: dir.to_path_buf(),
            home,
            tmp,
            storage_conf,
            registries_conf,
            containers_conf,
            policy: policy.display().to_string(),
            containerfile: file.display().to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::exec::Platform;
    use crate::build::parse::parse;
    use std::collections::BTreeMap;

    fn options(target: Option<&str>, args: &[(&str, &str)]) -> Options {
        Options {
            build_args: args.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<BTreeMap<_, _>>(),
            target: target.map(str::to_owned),
            platform: Platform::parse("linux/amd64").unwrap(),
            source_date_epoch: None,
        }
    }

    #[test]
    fn a_runner_is_needed_only_for_run_in_the_stages_built() {
        let f = parse("FROM scratch AS tools\nRUN make\nFROM scratch\nCOPY a /a\n").unwrap();
        assert!(!needs_runner(&f, &options(None, &[])));
        assert!(needs_runner(&f, &options(Some("tools"), &[])));
        let f = parse("FROM scratch AS tools\nRUN make\nFROM scratch\nCOPY --from=tools /a /a\n").unwrap();
        assert!(needs_runner(&f, &options(None, &[])));
        assert_eq!(first_run(&f, &options(None, &[])), Some(2));
    }

    #[test]
    fn external_images_are_the_bases_and_copy_sources_not_stages() {
        let f = parse(
            "ARG BASE=team/base:1\nFROM $BASE AS build\nRUN make\nFROM scratch\nCOPY --from=build /a /a\nCOPY --from=team/tools@sha256:aa /t /t\nCOPY --from=0 /b /b\n",
        )
        .unwrap();
        let plan = Plan::new(&f, &options(None, &[])).unwrap();
        assert_eq!(external_images(&plan).unwrap(), vec![(2, "team/base:1".to_owned()), (6, "team/tools@sha256:aa".to_owned())]);
        let plan = Plan::new(&f, &options(None, &[("BASE", "other/base:2")])).unwrap();
        assert_eq!(external_images(&plan).unwrap()[0].1, "other/base:2");
    }

    #[test]
    fn buildah_steps_become_the_builds_own_and_name_their_line() {
        let f = parse("FROM scratch AS a\nRUN one\nFROM scratch\nCOPY --from=a /x /x\nRUN two\n").unwrap();
        let plan = Plan::new(&f, &options(None, &[])).unwrap();
        let mut step = Step { plan: &plan, at: 0 };
        assert_eq!(step.translate("[1/2] STEP 1/2: FROM scratch AS a").as_deref(), Some("STEP 1/5: FROM scratch AS a"));
        assert_eq!(step.translate("some output"), None);
        step.translate("[1/2] STEP 2/2: RUN one");
        step.translate("[2/2] STEP 1/3: FROM scratch");
        step.translate("[2/2] STEP 2/3: COPY --from=a /x /x");
        assert_eq!(step.translate("[2/2] STEP 3/3: RUN two").as_deref(), Some("STEP 5/5: RUN two"));
        assert_eq!(step.instruction_line(), Some(5));
        assert_eq!(step.describe(), "STEP 5/5: RUN two");
    }

    #[test]
    fn disk_use_counts_regular_files_below() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        std::fs::write(dir.path().join("a/b/f"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("g"), vec![0u8; 24]).unwrap();
        assert_eq!(disk_use(dir.path()), 1024);
    }
}
