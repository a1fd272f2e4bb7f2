//! systemd's readiness protocol (`sd_notify`): one datagram per state
//! change to the socket named by `$NOTIFY_SOCKET`, a path or, with a
//! leading `@`, an abstract address. Without the variable (not run by
//! systemd with `Type=notify`) every call does nothing. Knows nothing of
//! what wharf is doing; the composition root says when.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Where state changes go; `None` when not under systemd.
pub(crate) struct Notifier {
    target: Option<SocketAddr>,
}

impl Notifier {
    /// Reads `$NOTIFY_SOCKET` once; an unusable value is logged and ignored
    /// (the service then runs, but systemd will not see it ready).
    pub(crate) fn from_env() -> Notifier {
        let target = std::env::var_os("NOTIFY_SOCKET").and_then(|value| match address(&value) {
            Ok(addr) => Some(addr),
            Err(e) => {
                tracing::warn!(socket = ?value, error = %e, "NOTIFY_SOCKET is unusable; systemd will not hear from wharf");
                None
            }
        });
        Notifier { target }
    }

    /// Both ports are bound and serving.
    pub(crate) fn ready(&self) {
        self.send("READY=1\nSTATUS=serving");
    }

    /// A reload (SIGHUP) has begun. systemd wants the monotonic clock with it
    /// to match the reload to the signal.
    pub(crate) fn reloading(&self) {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        let usec = u64::try_from(now.tv_sec).unwrap_or(0) * 1_000_000 + u64::try_from(now.tv_nsec).unwrap_or(0) / 1_000;
        self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}"));
    }

    /// The reload is over; `status` says how it went (shown by `systemctl status`).
    pub(crate) fn reloaded(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// Shutdown has begun: draining.
    pub(crate) fn stopping(&self) {
        self.send("STOPPING=1\nSTATUS=draining");
    }

    /// One datagram, best effort: systemd not listening must never stop wharf.
    fn send(&self, message: &str) {
        let Some(target) = &self.target else { return };
        let sent = UnixDatagram::unbound().and_then(|socket| socket.send_to_addr(message.as_bytes(), target));
        if let Err(e) = sent {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
    }
}

/// `/run/systemd/notify` or `@abstract-name`.
fn address(value: &std::ffi::OsStr) -> std::io::Result<SocketAddr> {
    use std::os::unix::ffi::OsStrExt;
    match value.as_bytes() {
        [] => Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, "empty")),
        [b'@', name @ ..] => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name)
        }
        path => SocketAddr::from_pathname(std::path::Path::new(std::ffi::OsStr::from_bytes(path))),
    }
}

/// A notification is newline-separated assignments: a status must not add
/// lines of its own.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn states_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        let n = Notifier { target: Some(address(path.as_os_str()).unwrap()) };
        n.ready();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving");
        n.reloading();
        let reloading = receive(&socket);
        assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
        assert!(reloading["RELOADING=1\nMONOTONIC_USEC=".len()..].parse::<u64>().is_ok(), "{reloading}");
        n.reloaded("reload failed:\nbad key");
        assert_eq!(receive(&socket), "READY=1\nSTATUS=reload failed: bad key");
        n.stopping();
        assert_eq!(receive(&socket), "STOPPING=1\nSTATUS=draining");
    }

    #[test]
    fn states_reach_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("wharf-notify-test-{}", std::process::id());
        let socket = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier { target: Some(address(std::ffi::OsStr::new(&format!("@{name}"))).unwrap()) };
        n.ready();
        assert_eq!(receive(&socket), "READY=1\nSTATUS=serving");
    }

    #[test]
    fn without_a_socket_nothing_is_sent_and_nothing_fails() {
        Notifier { target: None }.ready();
        assert!(address(std::ffi::OsStr::new("")).is_err());
    }
}
