//! Real registry clients, `skopeo` and `podman`, run hermetically: every
//! configuration file they read (registries.conf with its mirrors, the trust
//! policy, the auth file, storage.conf, containers.conf) lives in the test's
//! own temp dir, podman keeps its image store there on the `vfs` driver, and
//! nothing needs a daemon or the machine's own container configuration.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A `[[registry]]` in registries.conf whose pulls go to `mirror` first.
pub struct Mirror<'a> {
    /// What the image reference names, e.g. `registry.example`.
    pub location: &'a str,
    /// Where pulls really go, e.g. `127.0.0.1:5000` or `127.0.0.1:5000/upstream-name`.
    pub mirror: &'a str,
}

/// The client configuration of one test, in its own directory.
#[derive(Clone)]
pub struct Clients {
    dir: PathBuf,
}

/// A client process gets this long before `timeout` kills it, so a server
/// that stops answering fails the test instead of hanging the suite.
const CLIENT_DEADLINE_SECS: &str = "300";

/// What podman recorded about a pulled image.
pub struct PodmanImage {
    /// The manifest digest podman pulled.
    pub digest: String,
    /// The uncompressed layer digests, as podman unpacked them.
    pub diff_ids: Vec<String>,
}

impl Clients {
    /// Client configuration with no mirrors: references go where they say.
    pub fn new(dir: &Path) -> Clients {
        Clients::with_mirrors(dir, &[])
    }

    pub fn with_mirrors(dir: &Path, mirrors: &[Mirror]) -> Clients {
        for sub in ["registries.d", "tmp", "podman-root", "podman-runroot", "podman-tmp"] {
            std::fs::create_dir_all(dir.join(sub)).expect("create client dirs");
        }
        let mut registries = String::from("unqualified-search-registries = []\n");
        for m in mirrors {
            registries.push_str(&format!(
                "\n[[registry]]\nlocation = {:?}\n\n[[registry.mirror]]\nlocation = {:?}\ninsecure = true\n",
                m.location, m.mirror
            ));
        }
        write(dir, "registries.conf", &registries);
        write(dir, "policy.json", r#"{"default":[{"type":"insecureAcceptAnything"}]}"#);
        write(dir, "auth.json", "{}");
        write(
            dir,
            "storage.conf",
            &format!(
                "[storage]\ndriver = \"vfs\"\ngraphroot = {:?}\nrunroot = {:?}\n",
                dir.join("podman-root"),
                dir.join("podman-runroot")
            ),
        );
        // No systemd, no event journal: podman only pulls here.
        write(
            dir,
            "containers.conf",
            "[engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"none\"\n",
        );
        Clients { dir: dir.to_path_buf() }
    }

    /// Runs `skopeo` with this configuration. skopeo 1.9 reads neither
    /// CONTAINERS_REGISTRIES_CONF nor REGISTRY_AUTH_FILE, so both are flags:
    /// `--registries-conf` globally, `--authfile` after the subcommands that
    /// take it.
    pub fn skopeo(&self, args: &[&str]) -> Output {
        self.skopeo_with_env(&[], args)
    }

    /// `skopeo` with extra environment variables (say `GNUPGHOME` for the
    /// key `--sign-by` uses).
    pub fn skopeo_with_env(&self, env: &[(&str, &Path)], args: &[&str]) -> Output {
        let mut cmd = self.command("skopeo");
        cmd.envs(env.iter().map(|(k, v)| (*k, *v)));
        cmd.arg("--policy")
            .arg(self.dir.join("policy.json"))
            .arg("--registries.d")
            .arg(self.dir.join("registries.d"))
            .arg("--registries-conf")
            .arg(self.dir.join("registries.conf"))
            .arg("--tmpdir")
            .arg(self.dir.join("tmp"));
        match args.split_first() {
            Some((sub, rest)) if matches!(*sub, "copy" | "inspect") => {
                cmd.arg(sub).arg("--authfile").arg(self.dir.join("auth.json")).args(rest);
            }
            _ => {
                cmd.args(args);
            }
        }
        run(cmd, "skopeo", args)
    }

    /// Runs `skopeo` and returns its stdout; a failure fails the test with
    /// skopeo's own message.
    pub fn skopeo_ok(&self, args: &[&str]) -> Vec<u8> {
        expect_success(self.skopeo(args), "skopeo", args)
    }

    /// `skopeo copy` of `source` (e.g. `docker://host/repo:tag`) into a new
    /// OCI layout `dest` under `tag`, over plain HTTP, keeping digests.
    pub fn pull_to_layout(&self, source: &str, dest: &Path, tag: &str, extra: &[&str]) {
        let dest_ref = format!("oci:{}:{tag}", dest.display());
        let mut args = vec!["copy", "--preserve-digests", "--src-tls-verify=false"];
        args.extend_from_slice(extra);
        args.extend([source, dest_ref.as_str()]);
        self.skopeo_ok(&args);
    }

    /// The raw manifest bytes `skopeo inspect --raw` reads for `reference`.
    pub fn inspect_raw(&self, reference: &str, credentials: Option<&str>) -> Vec<u8> {
        let mut args = vec!["inspect", "--raw", "--tls-verify=false"];
        if let Some(c) = credentials {
            args.extend(["--creds", c]);
        }
        args.push(reference);
        self.skopeo_ok(&args)
    }

    /// Runs `podman` as a daemonless client with its store in the temp dir.
    pub fn podman(&self, args: &[&str]) -> Output {
        let mut cmd = self.with_store("podman");
        cmd.arg("--tmpdir").arg(self.dir.join("podman-tmp")).args(args);
        run(cmd, "podman", args)
    }

    pub fn podman_ok(&self, args: &[&str]) -> Vec<u8> {
        expect_success(self.podman(args), "podman", args)
    }

    /// `podman pull` and what podman stored for the image.
    pub fn podman_pull(&self, reference: &str) -> PodmanImage {
        self.podman_ok(&["pull", "--quiet", reference]);
        let out = self.podman_ok(&["image", "inspect", reference]);
        let inspect: serde_json::Value = serde_json::from_slice(&out)
            .unwrap_or_else(|e| panic!("podman image inspect printed no JSON ({e}): {}", String::from_utf8_lossy(&out)));
        let image = &inspect[0];
        PodmanImage {
            digest: image["Digest"].as_str().unwrap_or_default().to_owned(),
            diff_ids: image["RootFS"]["Layers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|l| l.as_str().map(str::to_owned))
                .collect(),
        }
    }

    /// Runs `buildah` with this configuration and the same store as podman.
    pub fn buildah(&self, args: &[&str]) -> Output {
        let mut cmd = self.with_store("buildah");
        cmd.args(args);
        run(cmd, "buildah", args)
    }

    /// `program` with this configuration and the store in the temp dir.
    fn with_store(&self, program: &str) -> Command {
        let mut cmd = self.command(program);
        cmd.arg("--storage-driver")
            .arg("vfs")
            .arg("--root")
            .arg(self.dir.join("podman-root"))
            .arg("--runroot")
            .arg(self.dir.join("podman-runroot"));
        cmd
    }

    pub fn buildah_ok(&self, args: &[&str]) -> Vec<u8> {
        expect_success(self.buildah(args), "buildah", args)
    }

    /// The directory holding this configuration's files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("timeout");
        cmd.arg("--kill-after=10")
            .arg(CLIENT_DEADLINE_SECS)
            .arg(program)
            .env("CONTAINERS_REGISTRIES_CONF", self.dir.join("registries.conf"))
            .env("CONTAINERS_STORAGE_CONF", self.dir.join("storage.conf"))
            .env("CONTAINERS_CONF", self.dir.join("containers.conf"))
            .env("REGISTRY_AUTH_FILE", self.dir.join("auth.json"))
            .env("TMPDIR", self.dir.join("tmp"));
        cmd
    }
}

/// Fails the test with a clear message when a program the suite needs is
/// missing: CI installs them (`.ci/run`), so a missing one is an error, not
/// a reason to skip.
pub fn require_program(program: &str, debian_package: &str) {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(
        found,
        "`{program}` is not on PATH; these end-to-end tests need it. \
         Install Debian's `{debian_package}` package (.ci/run does)."
    );
}

fn run(mut cmd: Command, program: &str, args: &[&str]) -> Output {
    require_program(program, program);
    let out = cmd.output().unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if out.status.code() == Some(124) || out.status.code() == Some(137) {
        panic!(
            "`{program} {}` did not finish within {CLIENT_DEADLINE_SECS}s and was killed; stderr:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn expect_success(out: Output, program: &str, args: &[&str]) -> Vec<u8> {
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}):\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn write(dir: &Path, name: &str, contents: &str) {
    std::fs::write(dir.join(name), contents).unwrap_or_else(|e| panic!("write {name}: {e}"));
}
