//! The systemd notify protocol (sd_notify(3)) for `Type=notify` units: READY=1, STATUS=, the
//! watchdog's WATCHDOG=1 and STOPPING=1, as datagrams to `$NOTIFY_SOCKET`. It owns only the
//! socket and the message format; when to send what is decided in `commands::run`. Without
//! `$NOTIFY_SOCKET` (not under systemd) every call does nothing.
//!
//! A few lines of std's `UnixDatagram` instead of a crate: the protocol is one datagram per
//! message, and sending never blocks (the socket is non-blocking), so a full systemd queue can
//! never stall the actor thread this is called from.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    socket: UnixDatagram,
    target: std::os::unix::net::SocketAddr,
    /// Half of `$WATCHDOG_USEC` (what sd_watchdog_enabled(3) advises); `None` when systemd
    /// expects no pings from this process.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier systemd asked for through the environment, if any. A socket that cannot be
    /// used is logged and ignored: the daemon still runs, and systemd reports the missing
    /// READY=1 itself.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let target = match socket_address(&path) {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!("NOTIFY_SOCKET {path:?} is not usable: {e}");
                return None;
            }
        };
        let socket = match UnixDatagram::unbound().and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        }) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::warn!("cannot create a socket for NOTIFY_SOCKET: {e}");
                return None;
            }
        };
        Some(Notifier {
            socket,
            target,
            watchdog: watchdog_interval(
                std::env::var("WATCHDOG_USEC").ok().as_deref(),
                std::env::var("WATCHDOG_PID").ok().as_deref(),
                std::process::id(),
            ),
        })
    }

    /// Sends one message ("READY=1", "STATUS=..."); failures are logged at debug level only, as
    /// systemd notices a missing READY=1 or WATCHDOG=1 itself.
    pub fn send(&self, message: &str) {
        if let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.target) {
            tracing::debug!("sd_notify {message:?} failed: {e}");
        }
    }

    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends STATUS= every few seconds and WATCHDOG=1 at half the watchdog timeout, forever.
    /// Awaited on the actor thread (inside the System's `block_on`), so when an actor blocks
    /// that thread the pings stop and systemd restarts the service.
    pub async fn keep_alive(&self, status: impl Fn() -> String) {
        const STATUS_EVERY: Duration = Duration::from_secs(2);
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        // Without a watchdog this arm never fires.
        let mut watchdog_tick =
            tokio::time::interval(self.watchdog.unwrap_or(Duration::from_secs(3600)));
        loop {
            tokio::select! {
                _ = status_tick.tick() => self.send(&format!("STATUS={}", status())),
                _ = watchdog_tick.tick(), if self.watchdog.is_some() => self.send("WATCHDOG=1"),
            }
        }
    }
}

/// `$NOTIFY_SOCKET` is a path, or an abstract socket name written with a leading `@`.
fn socket_address(value: &std::ffi::OsStr) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::ffi::OsStrExt;
    let bytes = value.as_bytes();
    match bytes.strip_prefix(b"@") {
        Some(name) => std::os::unix::net::SocketAddr::from_abstract_name(name),
        None if bytes.starts_with(b"/") => std::os::unix::net::SocketAddr::from_pathname(value),
        None => Err(std::io::Error::other(
            "neither an absolute path nor an abstract name (@...)",
        )),
    }
}

/// Half the watchdog timeout, when the watchdog is meant for this process (`$WATCHDOG_PID`,
/// when set, names it; a child started with the parent's environment must not ping for it).
fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, own_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(own_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_honours_usec_and_pid() {
        let half = Some(Duration::from_secs(5));
        assert_eq!(watchdog_interval(Some("10000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("10000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn socket_is_a_path_or_an_abstract_name() {
        assert!(socket_address("/run/systemd/notify".as_ref()).is_ok());
        assert!(socket_address("@abstract".as_ref()).is_ok());
        assert!(socket_address("relative".as_ref()).is_err());
    }
}
