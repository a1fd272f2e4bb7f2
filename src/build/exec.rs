//! Running a parsed Containerfile without a container runtime: stages in
//! order (only those the target needs), arguments and environment as
//! each instruction sees them, one layer per `COPY`/`ADD`, the other
//! instructions changing the config, every step in the history. `RUN`
//! stops the build at once, naming its line: it needs a runner.
//!
//! Blocking: runs on the blocking pool; base images come through
//! [`Bases`], which reaches wharf's own verified paths.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use super::copy::{self, CopyError};
use super::image::{ImageError, ImageState, LayerRef, Step, LAYER_GZIP};
use super::layer::{self, Body, Entry, LayerError};
use super::parse::{Command, Containerfile, Heredoc, Instruction, Kind};
use super::tree::{clean, Tree};
use super::words::{self, WordError};
use crate::oci::Digest;
use crate::storage::Storage;

/// An OS, architecture and variant (`linux/arm64/v8`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Platform {
    pub(crate) os: String,
    pub(crate) architecture: String,
    pub(crate) variant: Option<String>,
}

impl Platform {
    pub(crate) fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform { os: (*os).into(), architecture: (*arch).into(), variant: None }),
            [os, arch, v] if !os.is_empty() && !arch.is_empty() && !v.is_empty() => {
                Ok(Platform { os: (*os).into(), architecture: (*arch).into(), variant: Some((*v).into()) })
            }
            _ => Err(format!("platform {s:?}: expected os/architecture[/variant]")),
        }
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A base image, its layers stored.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub(crate) digest: Digest,
    /// Its manifest, as stored, and that manifest's media type.
    pub(crate) manifest: Vec<u8>,
    pub(crate) media_type: String,
    pub(crate) config: Vec<u8>,
    /// (digest, size, media type), as its manifest lists them.
    pub(crate) layers: Vec<(Digest, u64, String)>,
}

/// Where a build finds what it reads from outside its context: base
/// images, and files `ADD` fetches by URL (blocking calls).
pub(crate) trait Bases {
    /// The image `reference` names (for `platform`, out of an index).
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<Base, String>;
    /// A stored blob, as stored.
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, String>;
    /// Fetches `url` for `ADD` into the new file `into`, if the operator
    /// allows that URL: its size.
    fn fetch_url(&self, url: &str, into: &Path) -> Result<u64, String> {
        let _ = into;
        super::fetch::AddUrls::default().allows(url).map(|()| 0)
    }
    /// A stored layer, uncompressed.
    fn open_layer(&self, digest: &Digest, media_type: &str) -> Result<Box<dyn Read + Send>, String> {
        if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
            return Err(format!("{digest}: zstd layers are not read by the native builder"));
        }
        let reader = self.open_blob(digest)?;
        // OCI's `...tar+gzip` and Docker's `...rootfs.diff.tar.gzip`.
        if media_type.ends_with("gzip") {
            Ok(Box::new(flate2::read::GzDecoder::new(reader)))
        } else {
            Ok(reader)
        }
    }
}

/// What a build is asked.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) build_args: BTreeMap<String, String>,
    pub(crate) target: Option<String>,
    pub(crate) platform: Platform,
    /// Every time in the image (RFC 3339 from seconds since the epoch):
    /// `SOURCE_DATE_EPOCH`, else the base's creation time, else the epoch.
    pub(crate) source_date_epoch: Option<u64>,
}

/// A built image, stored but for its config and manifest.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) config: Vec<u8>,
    pub(crate) manifest: Vec<u8>,
    pub(crate) platform: Platform,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BuildError {
    #[error("Containerfile line {line}: {message}")]
    At { line: usize, message: String },
    #[error("{0}")]
    Other(String),
}

fn at(line: usize) -> impl Fn(String) -> BuildError {
    move |message| BuildError::At { line, message }
}

impl From<LayerError> for BuildError {
    fn from(e: LayerError) -> Self {
        BuildError::Other(e.to_string())
    }
}

impl From<ImageError> for BuildError {
    fn from(e: ImageError) -> Self {
        BuildError::Other(e.to_string())
    }
}

/// One stage as the build runs it.
struct Stage {
    image: ImageState,
    tree: Tree,
    /// ARGs declared in the stage: their values.
    args: BTreeMap<String, String>,
    shell: Vec<String>,
    /// Its files on disk, once a later `COPY --from` needed them.
    files: Option<PathBuf>,
}

/// The build's arguments known to every stage without a declaration
/// (BuildKit's automatic platform arguments).
fn automatic_args(p: &Platform) -> BTreeMap<String, String> {
    let mut a = BTreeMap::new();
    for prefix in ["TARGET", "BUILD"] {
        a.insert(format!("{prefix}PLATFORM"), p.to_string());
        a.insert(format!("{prefix}OS"), p.os.clone());
        a.insert(format!("{prefix}ARCH"), p.architecture.clone());
        a.insert(format!("{prefix}VARIANT"), p.variant.clone().unwrap_or_default());
    }
    a
}

fn rfc3339(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

pub(crate) fn seconds_of(rfc: &str) -> Option<u64> {
    humantime::parse_rfc3339_weak(rfc.trim_end_matches('Z').split('.').next()?).ok()?.duration_since(std::time::UNIX_EPOCH).ok().map(|d| d.as_secs())
}

/// A Containerfile split into stages, and what building `target` needs.
pub(crate) struct Plan<'f> {
    /// The ARGs before the first FROM (and the automatic ones).
    pub(crate) global: BTreeMap<String, String>,
    /// Each stage's instructions, its FROM first.
    pub(crate) stages: Vec<&'f [Instruction]>,
    /// Each stage's name (`FROM ... AS name`), lowercase.
    pub(crate) names: Vec<Option<String>>,
    pub(crate) target: usize,
    /// The stages the target needs, in order.
    pub(crate) needed: Vec<usize>,
    /// Their steps.
    pub(crate) total: usize,
}

impl<'f> Plan<'f> {
    pub(crate) fn new(file: &'f Containerfile, options: &Options) -> Result<Plan<'f>, BuildError> {
        // ARGs before the first FROM: for FROM lines, and for stages that
        // declare them again.
        let first_from = file.instructions.iter().position(|i| matches!(i.kind, Kind::From { .. }));
        let Some(first_from) = first_from else { return Err(BuildError::Other("the Containerfile has no FROM".into())) };
        let mut global = automatic_args(&options.platform);
        for i in &file.instructions[..first_from] {
            match &i.kind {
                Kind::Arg(decls) => {
                    for d in decls {
                        let (name, value) = declare(options, d, &global, i.line)?;
                        global.insert(name, value.unwrap_or_default());
                    }
                }
                _ => return Err(BuildError::At { line: i.line, message: "only ARG may come before the first FROM".into() }),
            }
        }
        let rest = &file.instructions[first_from..];
        let starts: Vec<usize> = rest.iter().enumerate().filter(|(_, i)| matches!(i.kind, Kind::From { .. })).map(|(n, _)| n).collect();
        let stages: Vec<&[Instruction]> =
            starts.iter().enumerate().map(|(k, &s)| &rest[s..starts.get(k + 1).copied().unwrap_or(rest.len())]).collect();
        let names: Vec<Option<String>> = stages
            .iter()
            .map(|ins| match &ins[0].kind {
                Kind::From { alias, .. } => alias.clone(),
                _ => None,
            })
            .collect();
        let target = match &options.target {
            None => stages.len() - 1,
            Some(t) => names
                .iter()
                .position(|n| n.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| BuildError::Other(format!("no stage named {t:?} (--target)")))?,
        };
        let needed = needed_stages(&stages, &names, target);
        let total = needed.iter().map(|&k| stages[k].len()).sum();
        Ok(Plan { global, stages, names, target, needed, total })
    }

    /// The instruction of step `n` (from 1), as steps are counted.
    pub(crate) fn step(&self, n: usize) -> Option<&'f Instruction> {
        self.needed.iter().flat_map(|&k| self.stages[k].iter()).nth(n.checked_sub(1)?)
    }
}

/// `NAME[=default]`: the name and its value (a build argument wins).
fn declare(options: &Options, decl: &str, scope: &BTreeMap<String, String>, line: usize) -> Result<(String, Option<String>), BuildError> {
    let lookup = |n: &str| scope.get(n).cloned();
    let (name, default) = match decl.split_once('=') {
        Some((n, d)) => (n.to_owned(), Some(words::word(d, '\\', &lookup).map_err(|e| at(line)(e.to_string()))?)),
        None => (decl.to_owned(), None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(BuildError::At { line, message: format!("bad ARG name {name:?}") });
    }
    let value = options.build_args.get(&name).cloned().or(default).or_else(|| scope.get(&name).cloned());
    Ok((name, value))
}

/// The builder's state across stages.
pub(crate) struct Builder<'a> {
    pub(crate) context: &'a Path,
    /// A directory of this build's own (extracted stages, added archives).
    pub(crate) work: &'a Path,
    pub(crate) storage: &'a Storage,
    pub(crate) bases: &'a dyn Bases,
    pub(crate) options: Options,
    /// Hears each step as it starts (`STEP 3/7: COPY ...`) and notes.
    pub(crate) log: &'a (dyn Fn(&str) + Sync),
}

impl Builder<'_> {
    /// Runs `file` to the target stage: its image.
    pub(crate) fn run(&self, file: &Containerfile) -> Result<Built, BuildError> {
        for note in &file.notes {
            (self.log)(note);
        }
        let plan = Plan::new(file, &self.options)?;
        let Plan { global, stages, names, target, needed, total } = &plan;
        let (global, names, target) = (global, names.as_slice(), *target);
        let mut step = 0;
        let mut built: Vec<Option<Stage>> = (0..stages.len()).map(|_| None).collect();
        for &k in needed {
            let instructions = stages[k];
            let mut stage: Option<Stage> = None;
            for i in instructions {
                step += 1;
                (self.log)(&format!("STEP {step}/{total}: {}", i.text));
                match stage.as_mut() {
                    None => stage = Some(self.from(i, global, names, &mut built, k)?),
                    Some(s) => self.step(s, i, global, names, &mut built, file.escape)?,
                }
            }
            built[k] = stage;
        }
        let last = built[target].take().ok_or_else(|| BuildError::Other("the target stage did not run".into()))?;
        let created_secs = self
            .options
            .source_date_epoch
            .or_else(|| last.image.base_created.as_deref().and_then(seconds_of))
            .unwrap_or(0);
        let (config, manifest) = last.image.write(&rfc3339(created_secs))?;
        Ok(Built { config, manifest, platform: self.options.platform.clone() })
    }

    /// The seconds every file and history entry of a layer carries.
    fn mtime(&self, stage: &Stage) -> u64 {
        self.options.source_date_epoch.or_else(|| stage.image.base_created.as_deref().and_then(seconds_of)).unwrap_or(0)
    }

    fn from(
        &self,
        i: &Instruction,
        global: &BTreeMap<String, String>,
        names: &[Option<String>],
        built: &mut [Option<Stage>],
        index: usize,
    ) -> Result<Stage, BuildError> {
        let Kind::From { image, platform, .. } = &i.kind else { return Err(BuildError::Other("a stage starts with FROM".into())) };
        let lookup = |n: &str| global.get(n).cloned();
        let expand = |s: &str| words::word(s, '\\', &lookup).map_err(|e| at(i.line)(e.to_string()));
        let image = expand(image)?;
        let platform = match platform {
            Some(p) => Platform::parse(&expand(p)?).map_err(at(i.line))?,
            None => self.options.platform.clone(),
        };
        let p = &platform;
        let (state, tree) = if image == "scratch" {
            (ImageState::scratch(&p.os, &p.architecture, p.variant.as_deref()), Tree::default())
        } else if let Some(k) = names[..index].iter().position(|n| n.as_deref() == Some(image.to_ascii_lowercase().as_str())) {
            let earlier = built[k].as_ref().ok_or_else(|| at(i.line)(format!("stage {image} was not built")))?;
            let mut state = earlier.image.clone();
            // History and layers carry on; this stage's own steps start now.
            state.base_history.extend(state.steps.drain(..).map(|s| history_value(&s)));
            (state, earlier.tree.clone())
        } else {
            let base = self.bases.resolve(&image, p).map_err(|e| at(i.line)(format!("FROM {image}: {e}")))?;
            let state = ImageState::from_base(&base.config, base.layers.clone()).map_err(|e| at(i.line)(format!("FROM {image}: {e}")))?;
            let mut tree = Tree::default();
            for (digest, _, media_type) in &base.layers {
                let reader = self.bases.open_layer(digest, media_type).map_err(|e| at(i.line)(format!("FROM {image}: {e}")))?;
                tree.apply_layer(reader).map_err(|e| at(i.line)(format!("FROM {image}: layer {digest}: {e}")))?;
            }
            (state, tree)
        };
        Ok(Stage { image: state, tree, args: BTreeMap::new(), shell: vec!["/bin/sh".into(), "-c".into()], files: None })
    }

    fn step(
        &self,
        s: &mut Stage,
        i: &Instruction,
        global: &BTreeMap<String, String>,
        names: &[Option<String>],
        built: &mut [Option<Stage>],
        escape: char,
    ) -> Result<(), BuildError> {
        let line = i.line;
        let err = at(line);
        // What `$VAR` means here: the stage's ARGs, then its ENV over them.
        let mut map: HashMap<String, String> = s.args.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        for (k, v) in &s.image.config.env {
            map.insert(k.clone(), v.clone());
        }
        let vars = Vars { map, escape, line };
        let word = |t: &str| vars.word(t);
        let words_of = |t: &str| vars.words(t);
        let mut empty = true;
        match &i.kind {
            Kind::From { .. } => return Err(err("FROM inside a stage".into())),
            Kind::Arg(decls) => {
                for d in decls {
                    let (name, value) = declare(&self.options, d, &{
                        let mut scope = global.clone();
                        scope.extend(s.args.clone());
                        scope
                    }, line)?;
                    let value = value.or_else(|| global.get(&name).cloned()).unwrap_or_default();
                    s.args.insert(name, value);
                }
            }
            Kind::Env(raw) => {
                for (k, v) in pairs(&words_of(raw)?, raw, &word).map_err(&err)? {
                    s.image.config.set_env(&k, &v);
                }
            }
            Kind::Label(raw) => {
                for (k, v) in pairs(&words_of(raw)?, raw, &word).map_err(&err)? {
                    s.image.config.labels.insert(k, v);
                }
            }
            Kind::Maintainer(who) => {
                s.image.config.labels.insert("maintainer".into(), who.clone());
            }
            Kind::Cmd(c) => s.image.config.cmd = Some(self.argv(c, &s.shell)),
            Kind::Entrypoint(c) => {
                s.image.config.entrypoint = Some(self.argv(c, &s.shell));
                // A new entrypoint drops the base's CMD, as other builders do.
                if !s.image.steps.iter().any(|st| st.created_by.to_ascii_uppercase().starts_with("CMD")) {
                    s.image.config.cmd = None;
                }
            }
            Kind::Shell(shell) => s.shell = shell.clone(),
            Kind::Workdir(w) => {
                let w = word(w)?;
                let base = s.image.config.working_dir.clone().unwrap_or_else(|| "/".into());
                let path = if w.starts_with('/') { w } else { format!("{base}/{w}") };
                let path = format!("/{}", clean(&path));
                s.image.config.working_dir = Some(path.clone());
                // Created (root's, 0755) when missing, in a layer of its own.
                if !s.tree.is_dir(&path) {
                    let mut entries = Vec::new();
                    let mut at_path = String::new();
                    for seg in clean(&path).split('/') {
                        at_path = if at_path.is_empty() { seg.to_owned() } else { format!("{at_path}/{seg}") };
                        if !s.tree.is_dir(&at_path) {
                            entries.push(Entry { path: at_path.clone(), body: Body::Dir, mode: 0o755, uid: 0, gid: 0 });
                        }
                    }
                    self.layer(s, entries)?;
                    empty = false;
                }
            }
            Kind::User(u) => s.image.config.user = Some(word(u)?),
            Kind::Expose(raw) => {
                for port in words_of(raw)? {
                    let port = if port.contains('/') { port.to_ascii_lowercase() } else { format!("{port}/tcp") };
                    s.image.config.exposed_ports.insert(port);
                }
            }
            Kind::Volume(c) => {
                let paths = match c {
                    Command::Exec(v) => v.iter().map(|p| word(p)).collect::<Result<Vec<_>, _>>()?,
                    Command::Shell(t) => words_of(t)?,
                };
                s.image.config.volumes.extend(paths);
            }
            Kind::StopSignal(sig) => s.image.config.stop_signal = Some(word(sig)?),
            Kind::Healthcheck(_) => (self.log)(&format!("line {line}: HEALTHCHECK is recorded in the history only: an OCI image config has no field for it")),
            Kind::Onbuild(_) => (self.log)(&format!("line {line}: ONBUILD is recorded in the history only: an OCI image config has no field for it")),
            Kind::Run { .. } => {
                return Err(err("RUN needs a runner: set [build] runner = \"buildah\" (with buildah installed); wharf never runs a build's commands on its host".into()))
            }
            Kind::Copy(c) | Kind::Add(c) => {
                let is_add = matches!(i.kind, Kind::Add(_));
                self.copy(s, c, is_add, names, built, &vars)?;
                empty = false;
            }
        }
        s.image.steps.push(Step { created_by: i.text.clone(), comment: Some("wharf build".into()), empty_layer: empty });
        Ok(())
    }

    /// A command as the config holds it: the shell form through SHELL.
    fn argv(&self, c: &Command, shell: &[String]) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(t) => shell.iter().cloned().chain(std::iter::once(t.clone())).collect(),
        }
    }

    /// Writes `entries` as the stage's next layer.
    fn layer(&self, s: &mut Stage, entries: Vec<Entry>) -> Result<(), BuildError> {
        // In the build's own directory: on the objects' filesystem, and
        // never swept while the build runs.
        let spool = self.work.join(format!("layer-{}", crate::random::hex_id().map_err(BuildError::Other)?));
        let mtime = self.mtime(s);
        for e in &entries {
            s.tree.add(e);
        }
        let written = layer::write(self.storage, &spool, entries, mtime)?;
        s.image.layers.push(LayerRef { digest: written.digest, size: written.size, media_type: LAYER_GZIP.into(), diff_id: written.diff_id });
        Ok(())
    }

    fn copy(
        &self,
        s: &mut Stage,
        c: &super::parse::Copy,
        is_add: bool,
        names: &[Option<String>],
        built: &mut [Option<Stage>],
        vars: &Vars,
    ) -> Result<(), BuildError> {
        let line = vars.line;
        let err = at(line);
        let word = |t: &str| vars.word(t);
        let words_of = |t: &str| vars.words(t);
        let mut args: Vec<String> = if c.json { c.args.iter().map(|a| word(a)).collect::<Result<_, _>>()? } else { words_of(&c.args.join(" "))? };
        let dest = args.pop().ok_or_else(|| err("no destination".into()))?;
        let owner = match &c.chown {
            Some(o) => Some(parse_owner(&word(o)?).map_err(&err)?),
            None => None,
        };
        let chmod = match &c.chmod {
            Some(m) => Some(u32::from_str_radix(&word(m)?, 8).map_err(|_| err(format!("--chmod={m}: an octal mode, e.g. 0755")))?),
            None => None,
        };
        let workdir = s.image.config.working_dir.clone().unwrap_or_else(|| "/".into());
        let root: PathBuf = match &c.from {
            None => self.context.to_path_buf(),
            Some(from) => {
                let from = word(from)?;
                self.stage_files(&from, names, built, line)?
            }
        };
        // Heredoc sources are files of their own.
        let mut entries = Vec::new();
        let mut sources = Vec::new();
        for a in &args {
            match heredoc_of(a, &c.heredocs) {
                Some(h) => {
                    let body = if h.expand { vars.expand(&h.body)? } else { h.body.clone() };
                    let into = if dest.ends_with('/') { format!("{dest}{}", h.name) } else { dest.clone() };
                    let path = clean(&if into.starts_with('/') { into } else { format!("{workdir}/{into}") });
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    entries.push(Entry { path, body: Body::Bytes(body.into_bytes()), mode: chmod.unwrap_or(0o644), uid, gid });
                }
                None if is_add && (a.starts_with("http://") || a.starts_with("https://")) => {
                    // Fetched as a file (never unpacked), 0600 unless --chmod.
                    let name = a.split(['?', '#']).next().unwrap_or_default().rsplit('/').next().filter(|n| !n.is_empty()).unwrap_or("download").to_owned();
                    let dir = self.work.join(format!("url-{}", crate::random::hex_id().map_err(BuildError::Other)?));
                    std::fs::create_dir_all(&dir).map_err(|e| BuildError::Other(e.to_string()))?;
                    let file = dir.join(&name);
                    let size = self.bases.fetch_url(a, &file).map_err(|e| err(format!("ADD {a}: {e}")))?;
                    (self.log)(&format!("line {line}: fetched {a} ({size} bytes)"));
                    let into = if dest.ends_with('/') { format!("{dest}{name}") } else { dest.clone() };
                    let path = clean(&if into.starts_with('/') { into } else { format!("{workdir}/{into}") });
                    let (uid, gid) = owner.unwrap_or((0, 0));
                    entries.push(Entry { path, body: Body::File { path: file, size }, mode: chmod.unwrap_or(0o600), uid, gid });
                }
                None if is_add && a.starts_with("git@") => {
                    return Err(err(format!("ADD {a}: git sources are not fetched in builds; clone it into the context and COPY it")));
                }
                None => sources.push(a.clone()),
            }
        }
        if !sources.is_empty() {
            let request = copy::Request { root: &root, sources: &sources, dest: &dest, workdir: &workdir, owner, chmod };
            let planned = copy::plan(&request, &s.tree).map_err(|e: CopyError| err(e.to_string()))?;
            let planned = if is_add { self.unpack_archives(planned, line)? } else { planned };
            entries.extend(planned);
        }
        self.layer(s, entries)
    }

    /// ADD: a local tar (plain or gzip) is unpacked into the destination.
    fn unpack_archives(&self, entries: Vec<Entry>, line: usize) -> Result<Vec<Entry>, BuildError> {
        let mut out = Vec::new();
        for e in entries {
            let Body::File { path, .. } = &e.body else {
                out.push(e);
                continue;
            };
            let Some(reader) = archive_reader(path).map_err(|m| at(line)(m))? else {
                out.push(e);
                continue;
            };
            let dir = self.work.join(format!("add-{}", crate::random::hex_id().map_err(BuildError::Other)?));
            std::fs::create_dir_all(&dir).map_err(|e| BuildError::Other(e.to_string()))?;
            unpack_layer(reader, &dir).map_err(|m| at(line)(format!("ADD {}: {m}", path.display())))?;
            // The archive's contents go where the archive would have: its
            // destination is a directory.
            let dest = e.path.rsplit_once('/').map(|(d, _)| d.to_owned()).unwrap_or_default();
            let sources = vec![".".to_owned()];
            let dest_dir = format!("/{dest}/");
            let req = copy::Request { root: &dir, sources: &sources, dest: &dest_dir, workdir: "/", owner: None, chmod: None };
            out.extend(copy::plan(&req, &Tree::default()).map_err(|e| at(line)(e.to_string()))?);
        }
        Ok(out)
    }

    /// A stage's files on disk (extracted once), or an image's.
    fn stage_files(&self, from: &str, names: &[Option<String>], built: &mut [Option<Stage>], line: usize) -> Result<PathBuf, BuildError> {
        let by_name = names.iter().position(|n| n.as_deref() == Some(from.to_ascii_lowercase().as_str()));
        let by_index = from.parse::<usize>().ok().filter(|&k| k < built.len());
        let k = by_name.or(by_index);
        let (layers, key): (Vec<(Digest, String)>, String) = match k.and_then(|k| built[k].as_ref()) {
            Some(stage) => {
                if let Some(files) = &stage.files {
                    return Ok(files.clone());
                }
                (stage.image.layers.iter().map(|l| (l.digest.clone(), l.media_type.clone())).collect(), format!("stage-{}", k.unwrap_or(0)))
            }
            None => {
                let base = self.bases.resolve(from, &self.options.platform).map_err(|e| at(line)(format!("--from={from}: {e}")))?;
                (base.layers.into_iter().map(|(d, _, m)| (d, m)).collect(), format!("image-{}", base.digest.hex()))
            }
        };
        let dir = self.work.join(key);
        if !dir.exists() {
            std::fs::create_dir_all(&dir).map_err(|e| BuildError::Other(e.to_string()))?;
            for (digest, media_type) in &layers {
                let reader = self.bases.open_layer(digest, media_type).map_err(|e| at(line)(format!("--from={from}: {e}")))?;
                unpack_layer(reader, &dir).map_err(|m| at(line)(format!("--from={from}: layer {digest}: {m}")))?;
            }
        }
        if let Some(k) = k {
            if let Some(stage) = built[k].as_mut() {
                stage.files = Some(dir.clone());
            }
        }
        Ok(dir)
    }
}

/// What `$VAR` means at one instruction: the stage's ARGs, its ENV over
/// them.
struct Vars {
    map: HashMap<String, String>,
    escape: char,
    line: usize,
}

impl Vars {
    fn lookup(&self) -> impl Fn(&str) -> Option<String> + '_ {
        |n: &str| self.map.get(n).cloned()
    }

    fn fail(&self, e: WordError) -> BuildError {
        BuildError::At { line: self.line, message: e.to_string() }
    }

    fn word(&self, t: &str) -> Result<String, BuildError> {
        words::word(t, self.escape, &self.lookup()).map_err(|e| self.fail(e))
    }

    fn words(&self, t: &str) -> Result<Vec<String>, BuildError> {
        words::words(t, self.escape, &self.lookup()).map_err(|e| self.fail(e))
    }

    fn expand(&self, t: &str) -> Result<String, BuildError> {
        words::expand(t, self.escape, &self.lookup()).map_err(|e| self.fail(e))
    }
}

/// The history entry of a step, as a base's history holds it.
fn history_value(s: &Step) -> serde_json::Value {
    let mut v = serde_json::json!({ "created_by": s.created_by });
    if s.empty_layer {
        v["empty_layer"] = serde_json::Value::Bool(true);
    }
    if let Some(c) = &s.comment {
        v["comment"] = serde_json::Value::String(c.clone());
    }
    v
}

/// `ENV`/`LABEL` words as pairs: `k=v` words, or the legacy `ENV k v w`.
fn pairs(
    words: &[String],
    raw: &str,
    word: &dyn Fn(&str) -> Result<String, BuildError>,
) -> Result<Vec<(String, String)>, String> {
    if words.first().is_some_and(|w| !w.contains('=')) {
        let (key, value) = raw.trim().split_once(char::is_whitespace).ok_or("a key needs a value")?;
        let value = word(value.trim()).map_err(|e| e.to_string())?;
        return Ok(vec![(key.to_owned(), value)]);
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
            _ => Err(format!("{w:?}: expected key=value")),
        })
        .collect()
}

fn parse_owner(s: &str) -> Result<(u64, u64), String> {
    let id = |p: &str| match p {
        "root" => Ok(0),
        p => p.parse::<u64>().map_err(|_| format!("--chown={s}: numeric ids (or root) in builds without a runner")),
    };
    match s.split_once(':') {
        Some((u, g)) => Ok((id(u)?, id(g)?)),
        None => {
            let u = id(s)?;
            Ok((u, u))
        }
    }
}

fn heredoc_of<'a>(arg: &str, heredocs: &'a [Heredoc]) -> Option<&'a Heredoc> {
    let name = arg.strip_prefix("<<")?.trim_start_matches('-').trim_matches(|c| c == '"' || c == '\'');
    heredocs.iter().find(|h| h.name == name)
}

/// A reader of the tar inside `path` when it is an archive (plain tar
/// or gzip); None for any other file.
fn archive_reader(path: &Path) -> Result<Option<Box<dyn Read + Send>>, String> {
    let mut head = [0u8; 262];
    let mut f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let n = f.read(&mut head).map_err(|e| e.to_string())?;
    let f = std::fs::File::open(path).map_err(|e| e.to_string())?;
    if n >= 2 && head[..2] == [0x1f, 0x8b] {
        return Ok(Some(Box::new(flate2::read::GzDecoder::new(f))));
    }
    if n >= 262 && &head[257..262] == b"ustar" {
        return Ok(Some(Box::new(f)));
    }
    Ok(None)
}

/// Applies a layer's tar onto `dir`: whiteouts remove, opaque
/// directories empty, devices skipped, nothing written outside `dir`.
pub(crate) fn unpack_layer(tar: impl Read, dir: &Path) -> Result<(), String> {
    let mut archive = tar::Archive::new(tar);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(|e| e.to_string())? {
        let mut entry = entry.map_err(|e| e.to_string())?;
        let raw = entry.path().map_err(|e| e.to_string())?.display().to_string();
        let path = clean(&raw);
        let (parent, name) = match path.rsplit_once('/') {
            Some((d, n)) => (d.to_owned(), n.to_owned()),
            None => (String::new(), path.clone()),
        };
        if name == ".wh..wh..opq" {
            if let Ok(read) = std::fs::read_dir(dir.join(&parent)) {
                for e in read.flatten() {
                    let p = e.path();
                    let _ = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(".wh.") {
            let p = dir.join(&parent).join(hidden);
            let _ = if p.is_dir() && !p.is_symlink() { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
            continue;
        }
        match entry.header().entry_type() {
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => continue,
            _ => {}
        }
        // unpack_in refuses paths that leave `dir`.
        entry.unpack_in(dir).map_err(|e| format!("{raw}: {e}"))?;
    }
    Ok(())
}

/// The stages the target needs: itself, the stages its FROM and its
/// `COPY --from` name, and theirs, in file order.
fn needed_stages(stages: &[&[Instruction]], names: &[Option<String>], target: usize) -> Vec<usize> {
    let refers = |k: usize| -> Vec<usize> {
        let mut out = Vec::new();
        for i in stages[k].iter() {
            let named = match &i.kind {
                Kind::From { image, .. } => Some(image.clone()),
                Kind::Copy(c) => c.from.clone(),
                _ => None,
            };
            if let Some(n) = named {
                let n = n.to_ascii_lowercase();
                if let Some(p) = names.iter().position(|x| x.as_deref() == Some(n.as_str())) {
                    out.push(p);
                } else if let Ok(p) = n.parse::<usize>() {
                    out.push(p);
                }
            }
        }
        out
    };
    let mut need = vec![false; stages.len()];
    let mut todo = vec![target];
    while let Some(k) = todo.pop() {
        if k < need.len() && !need[k] {
            need[k] = true;
            todo.extend(refers(k).into_iter().filter(|&p| p < k));
        }
    }
    (0..stages.len()).filter(|&k| need[k]).collect()
}

#[cfg(test)]
#[path = "exec_tests.rs"]
mod tests;
