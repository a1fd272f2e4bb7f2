//! A throwaway PostgreSQL cluster from the machine's postgresql packages
//! (`initdb`, `pg_ctl` under /usr/lib/postgresql/*/bin), listening on a unix
//! socket in its own directory only: no port to collide with. PostgreSQL
//! refuses to run as root; as root it runs as the `postgres` user.
//! Stopped when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Postgres {
    dir: PathBuf,
    bin: PathBuf,
    /// The loopback TCP port, when it listens on one (with TLS).
    port: Option<u16>,
    /// The server's options, to start it again.
    options: String,
}

fn server_bin() -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server is not installed (apt-get install postgresql)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("pg_ctl").exists())
        .collect();
    found.sort();
    found.pop().expect("no /usr/lib/postgresql/*/bin/pg_ctl")
}

fn is_root() -> bool {
    // The effective user of this process, from its own status file.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

/// `program args...`, as the postgres user when this process is root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl Postgres {
    /// Initialises and starts a cluster in `dir`.
    pub fn start(dir: &Path) -> Postgres {
        Postgres::start_with(dir, None)
    }

    /// Also listens on a loopback TCP port with TLS: `certs` holds
    /// `server.crt` and `server.key` (see `service::make_ca_and_server_cert`).
    pub fn start_tls(dir: &Path, certs: &Path) -> Postgres {
        Postgres::start_with(dir, Some(certs))
    }

    fn start_with(dir: &Path, certs: Option<&Path>) -> Postgres {
        std::fs::create_dir_all(dir).expect("create the PostgreSQL dir");
        if is_root() {
            let status = Command::new("chown").args(["postgres:", &dir.display().to_string()]).status();
            assert!(status.is_ok_and(|s| s.success()), "chown {} to postgres", dir.display());
            // Its parents must let the postgres user through (a test's
            // temporary directory is private to root).
            use std::os::unix::fs::PermissionsExt;
            for parent in dir.ancestors().skip(1) {
                let Ok(meta) = std::fs::metadata(parent) else { break };
                if meta.permissions().mode() & 0o001 != 0 {
                    break;
                }
                let mode = meta.permissions().mode() | 0o001;
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode)).expect("let postgres through");
            }
        }
        let bin = server_bin();
        let data = dir.join("data");
        let out = as_owner(&bin.join("initdb"))
            .args(["-D", &data.display().to_string(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .output()
            .expect("run initdb");
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut options = format!(
            "-c unix_socket_directories='{}' -c fsync=off -c synchronous_commit=off",
            dir.display()
        );
        let port = match certs {
            None => {
                options.push_str(" -c listen_addresses=''");
                None
            }
            Some(certs) => {
                // The server reads its key only if its owner alone can.
                for file in ["server.crt", "server.key"] {
                    std::fs::copy(certs.join(file), dir.join(file)).expect("copy the server's certificate");
                }
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir.join("server.key"), std::fs::Permissions::from_mode(0o600)).expect("chmod");
                if is_root() {
                    for file in ["server.crt", "server.key"] {
                        let _ = Command::new("chown").args(["postgres:", &dir.join(file).display().to_string()]).status();
                    }
                }
                let port = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port").local_addr().expect("addr").port();
                options.push_str(&format!(
                    " -c listen_addresses='127.0.0.1' -c port={port} -c ssl=on -c ssl_cert_file='{}' -c ssl_key_file='{}'",
                    dir.join("server.crt").display(),
                    dir.join("server.key").display()
                ));
                Some(port)
            }
        };
        let pg = Postgres { dir: dir.to_owned(), bin, port, options };
        pg.start_server();
        pg
    }

    fn start_server(&self) {
        let out = as_owner(&self.bin.join("pg_ctl"))
            .args(["-D", &self.dir.join("data").display().to_string(), "-l", &self.dir.join("postgres.log").display().to_string()])
            .args(["-w", "-t", "60", "-o", &self.options, "start"])
            .output()
            .expect("run pg_ctl");
        let log = std::fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default();
        assert!(out.status.success(), "pg_ctl start: {}\n{log}", String::from_utf8_lossy(&out.stderr));
    }

    /// Stops the server (its clients' connections are cut), as an outage
    /// would; [`Postgres::resume`] starts it again. A fast shutdown, not
    /// an immediate one: this throwaway server runs without fsync, so only
    /// a clean stop keeps what was committed.
    pub fn halt(&self) {
        let out = as_owner(&self.bin.join("pg_ctl"))
            .args(["-D", &self.dir.join("data").display().to_string(), "-m", "fast", "-w", "stop"])
            .output()
            .expect("run pg_ctl");
        assert!(out.status.success(), "pg_ctl stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Starts the server [`Postgres::halt`] stopped, with its data.
    pub fn resume(&self) {
        self.start_server();
    }

    /// A `postgres://` URL over TCP to `localhost`, requiring TLS.
    pub fn tls_url(&self, db: &str) -> String {
        let port = self.port.expect("started with TLS");
        format!("postgres://postgres@localhost:{port}/{db}?sslmode=require")
    }

    /// The superuser's connection string to database `db`.
    pub fn url(&self, db: &str) -> String {
        // The socket's name carries the port.
        let port = self.port.map(|p| format!(" port={p}")).unwrap_or_default();
        format!("host={} user=postgres dbname={db}{port}", self.dir.display())
    }

    /// Runs SQL with psql on database `db`; the rows, one line each
    /// (columns separated by `|`).
    pub fn sql(&self, db: &str, sql: &str) -> Vec<String> {
        let out = Command::new("psql")
            .args(["-q", "-At", "-v", "ON_ERROR_STOP=1", &self.url(db), "-c", sql])
            .output()
            .expect("run psql");
        assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).lines().map(str::to_owned).collect()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = as_owner(&self.bin.join("pg_ctl"))
            .args(["-D", &self.dir.join("data").display().to_string(), "-m", "immediate", "-w", "stop"])
            .output();
    }
}
