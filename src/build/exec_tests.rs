//! The native builder on real storage with a base image made here.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;

use serde_json::Value;

use super::*;
use crate::build::parse::parse;

/// Bases from a map of name → base, layers read from storage.
struct Fake {
    storage: Storage,
    images: BTreeMap<String, Base>,
    runtime: tokio::runtime::Handle,
}

impl Bases for Fake {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<Base, String> {
        self.images.get(reference).cloned().ok_or_else(|| format!("no image {reference}"))
    }
    fn open_blob(&self, digest: &Digest) -> Result<Box<dyn Read + Send>, String> {
        let bytes = self.runtime.block_on(self.storage.read_small(digest, 64 << 20)).map_err(|e| e.to_string())?.ok_or("gone")?;
        Ok(Box::new(std::io::Cursor::new(bytes.to_vec())))
    }
}

struct Rig {
    dir: tempfile::TempDir,
    storage: Storage,
}

impl Rig {
    async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let storage = Storage::open(&dir.path().join("storage")).await.unwrap();
        let ctx = dir.path().join("ctx");
        std::fs::create_dir_all(ctx.join("app/lib")).unwrap();
        std::fs::write(ctx.join("tool"), b"\x7fELF static tool").unwrap();
        std::fs::write(ctx.join("app/main.py"), b"print('hi')\n").unwrap();
        std::fs::write(ctx.join("app/lib/util.py"), b"x = 1\n").unwrap();
        // A tar for ADD.
        let mut t = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        t.append_data(&mut h, "inside/data.txt", &b"data\n"[..]).unwrap();
        std::fs::write(ctx.join("bundle.tar"), t.into_inner().unwrap()).unwrap();
        std::fs::create_dir_all(dir.path().join("work")).unwrap();
        Rig { dir, storage }
    }

    fn ctx(&self) -> PathBuf {
        self.dir.path().join("ctx")
    }

    /// Builds `text` with `bases`: the build, and the log.
    fn build(&self, text: &str, args: &[(&str, &str)], target: Option<&str>, images: BTreeMap<String, Base>) -> (Result<Built, BuildError>, Vec<String>) {
        let file = parse(text).unwrap();
        let log = Mutex::new(Vec::new());
        let fake = Fake { storage: self.storage.clone(), images, runtime: tokio::runtime::Handle::current() };
        let ctx = self.ctx();
        let work = self.dir.path().join("work").join(crate::random::hex_id().unwrap());
        std::fs::create_dir_all(&work).unwrap();
        let builder = Builder {
            context: &ctx,
            work: &work,
            storage: &self.storage,
            bases: &fake,
            options: Options {
                build_args: args.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                target: target.map(str::to_owned),
                platform: Platform::parse("linux/amd64").unwrap(),
                source_date_epoch: None,
            },
            log: &|l: &str| log.lock().unwrap().push(l.to_owned()),
        };
        let out = tokio::task::block_in_place(|| builder.run(&file));
        (out, log.into_inner().unwrap())
    }

    /// The files of a built image's layers: path → (mode, uid, bytes).
    async fn files(&self, built: &Built) -> BTreeMap<String, (u32, u64, Vec<u8>)> {
        let m: Value = serde_json::from_slice(&built.manifest).unwrap();
        let mut out = BTreeMap::new();
        for l in m["layers"].as_array().unwrap() {
            let digest: Digest = l["digest"].as_str().unwrap().parse().unwrap();
            let bytes = self.storage.read_small(&digest, 64 << 20).await.unwrap().unwrap();
            let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
            for e in tar.entries().unwrap() {
                let mut e = e.unwrap();
                let path = e.path().unwrap().display().to_string();
                let (mode, uid) = (e.header().mode().unwrap(), e.header().uid().unwrap());
                let mut body = Vec::new();
                e.read_to_end(&mut body).unwrap();
                out.insert(path, (mode, uid, body));
            }
        }
        out
    }
}

fn config(built: &Built) -> Value {
    serde_json::from_slice::<Value>(&built.config).unwrap()["config"].clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn from_scratch_a_static_binary_and_its_config() {
    let rig = Rig::new().await;
    let text = "FROM scratch\nARG VERSION=0.1\nCOPY --chmod=0755 tool /usr/local/bin/tool\n\
                ENV VERSION=$VERSION PATH=/usr/local/bin\nLABEL org.opencontainers.image.version=\"${VERSION}\"\n\
                WORKDIR /data\nUSER 1000:1000\nEXPOSE 8080 53/udp\nVOLUME /data\nSTOPSIGNAL SIGINT\n\
                ENTRYPOINT [\"/usr/local/bin/tool\"]\nCMD [\"--serve\"]\n";
    let (built, log) = rig.build(text, &[("VERSION", "1.4")], None, BTreeMap::new());
    let built = built.unwrap();
    assert_eq!(log[0], "STEP 1/12: FROM scratch");
    assert!(log.iter().any(|l| l.starts_with("STEP 3/12: COPY")), "{log:?}");
    let c = config(&built);
    assert_eq!(c["Env"], serde_json::json!(["PATH=/usr/local/bin", "VERSION=1.4"]), "PATH replaced where scratch put it");
    assert_eq!(c["Labels"]["org.opencontainers.image.version"], "1.4");
    assert_eq!(c["WorkingDir"], "/data");
    assert_eq!(c["User"], "1000:1000");
    assert_eq!(c["ExposedPorts"], serde_json::json!({"53/udp": {}, "8080/tcp": {}}));
    assert_eq!(c["Volumes"], serde_json::json!({"/data": {}}));
    assert_eq!((c["Entrypoint"].clone(), c["Cmd"].clone(), c["StopSignal"].clone()), (serde_json::json!(["/usr/local/bin/tool"]), serde_json::json!(["--serve"]), serde_json::json!("SIGINT")));
    let files = rig.files(&built).await;
    assert_eq!(files["usr/local/bin/tool"], (0o755, 0, b"\x7fELF static tool".to_vec()));
    assert!(files.contains_key("data/"), "WORKDIR made its directory: {:?}", files.keys());
    let full: Value = serde_json::from_slice(&built.config).unwrap();
    assert_eq!(full["history"].as_array().unwrap().len(), 11, "a step each but FROM");
    assert_eq!(full["rootfs"]["diff_ids"].as_array().unwrap().len(), 2, "COPY and WORKDIR");
    assert_eq!(full["created"], "1970-01-01T00:00:00Z");

    // The same input: the same bytes.
    let (again, _) = rig.build(text, &[("VERSION", "1.4")], None, BTreeMap::new());
    let again = again.unwrap();
    assert_eq!((again.config, again.manifest), (built.config.clone(), built.manifest.clone()));
    let (other, _) = rig.build(text, &[("VERSION", "1.5")], None, BTreeMap::new());
    assert_ne!(other.unwrap().manifest, built.manifest);
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_stage_copy_from_add_of_a_tar_and_heredocs() {
    let rig = Rig::new().await;
    let text = "FROM scratch AS build\nCOPY app /src/app\nADD bundle.tar /opt/\n\
                FROM scratch AS unused\nRUN never\n\
                FROM scratch\nCOPY --from=build /src/app/lib /lib/\nCOPY --from=build /opt/inside/data.txt /data.txt\n\
                COPY <<EOF /etc/motd\nwelcome $NAME, it's \"here\"\nEOF\nARG NAME\n";
    let (built, log) = rig.build(text, &[("NAME", "x")], None, BTreeMap::new());
    let built = built.unwrap_or_else(|e| panic!("{e}: {log:?}"));
    assert!(!log.iter().any(|l| l.contains("RUN never")), "the unused stage never ran: {log:?}");
    let files = rig.files(&built).await;
    assert_eq!(files["lib/util.py"].2, b"x = 1\n");
    assert_eq!(files["data.txt"].2, b"data\n", "ADD unpacked the tar");
    assert_eq!(files["etc/motd"].2, b"welcome , it's \"here\"\n", "NAME is declared after the COPY");
    assert!(!files.contains_key("src/app/main.py"), "the build stage's files stay there");

    // --target stops at a stage.
    let (first, _) = rig.build(text, &[], Some("build"), BTreeMap::new());
    let files = rig.files(&first.unwrap()).await;
    assert!(files.contains_key("src/app/main.py") && files.contains_key("opt/inside/data.txt"), "{:?}", files.keys());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_base_image_carries_its_layers_config_and_history() {
    let rig = Rig::new().await;
    let (base, _) = rig.build("FROM scratch\nCOPY tool /bin/tool\nENV A=1\nCMD [\"/bin/tool\"]\n", &[], None, BTreeMap::new());
    let base = base.unwrap();
    let m: Value = serde_json::from_slice(&base.manifest).unwrap();
    let layers = m["layers"].as_array().unwrap().iter().map(|l| (l["digest"].as_str().unwrap().parse().unwrap(), l["size"].as_u64().unwrap(), l["mediaType"].as_str().unwrap().to_owned())).collect();
    let images = BTreeMap::from([("team/base:1".to_owned(), Base {
            digest: Digest::of(crate::oci::Algorithm::Sha256, &base.manifest),
            manifest: base.manifest.clone(),
            media_type: crate::oci::media::OCI_MANIFEST.into(),
            config: base.config.clone(),
            layers,
        })]);
    let (built, _) = rig.build("FROM team/base:1\nCOPY tool /bin/tool\nENV B=2\nENTRYPOINT [\"/bin/tool\"]\n", &[], None, images.clone());
    let built = built.unwrap();
    let full: Value = serde_json::from_slice(&built.config).unwrap();
    assert_eq!(full["rootfs"]["diff_ids"].as_array().unwrap().len(), 2);
    assert_eq!(full["history"].as_array().unwrap().len(), 6);
    assert_eq!(full["config"]["Env"], serde_json::json!([format!("PATH={}", super::super::image::DEFAULT_PATH), "A=1", "B=2"]));
    assert!(full["config"]["Cmd"].is_null(), "a new ENTRYPOINT drops the base's CMD");
    let m: Value = serde_json::from_slice(&built.manifest).unwrap();
    assert_eq!(m["layers"][0]["digest"], serde_json::from_slice::<Value>(&base.manifest).unwrap()["layers"][0]["digest"]);
    // /bin exists in the base: not repeated in the new layer.
    let files = rig.files(&built).await;
    assert!(files.contains_key("bin/tool"));
    // COPY --from an image.
    let (from_image, log) = rig.build("FROM scratch\nCOPY --from=team/base:1 /bin/tool /t\n", &[], None, images);
    assert_eq!(rig.files(&from_image.unwrap_or_else(|e| panic!("{e} {log:?}"))).await["t"].2, b"\x7fELF static tool");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_builds_name_their_line() {
    let rig = Rig::new().await;
    for (text, line, says) in [
        ("FROM scratch\nRUN echo hi\n", 2, "runner"),
        ("FROM scratch\nCOPY ../etc/passwd /x\n", 2, "out of the context"),
        ("FROM scratch\nCOPY nope /x\n", 2, "no such file"),
        ("FROM nothing:here\n", 1, "no image"),
        ("FROM scratch\nADD http://example.com/x /x\n", 2, "URLs"),
        ("FROM scratch\nCOPY --chown=alice tool /x\n", 2, "numeric"),
        ("FROM scratch\nCOPY --from=nowhere /x /x\n", 2, "no image nowhere"),
    ] {
        match rig.build(text, &[], None, BTreeMap::new()).0 {
            Err(BuildError::At { line: l, message }) => {
                assert_eq!(l, line, "{text}: {message}");
                assert!(message.contains(says), "{text}: {message}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    assert!(matches!(rig.build("FROM scratch\n", &[], Some("nope"), BTreeMap::new()).0, Err(BuildError::Other(m)) if m.contains("no stage")));
}
