//! sd_notify: tell systemd the agent is ready, alive, busy or stopping.
//!
//! Each function sends one datagram to the socket named by `$NOTIFY_SOCKET`
//! (set by systemd for `Type=notify` services and for `NotifyAccess=`) and is a
//! no-op returning `Ok(())` when the variable is unset, e.g. when the agent runs
//! outside systemd. See sd_notify(3):
//! <https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html>.
//!
//! Errors are I/O errors from the socket; callers usually log them and go on.

use std::io;
use std::time::Duration;

use sd_notify::NotifyState;

/// `READY=1`: start-up finished; systemd completes the start job of a
/// `Type=notify` unit on this.
pub fn ready() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Ready])
}

/// `STATUS=...`: one line shown by `systemctl status`. Newlines and other
/// control characters are replaced by spaces, as the protocol is line-based.
pub fn status(text: &str) -> io::Result<()> {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    sd_notify::notify(&[NotifyState::Status(&line)])
}

/// `WATCHDOG=1`: the keep-alive ping for `WatchdogSec=`. Send it every
/// [`watchdog_interval`].
pub fn watchdog() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Watchdog])
}

/// `STOPPING=1`: the agent is shutting down.
pub fn stopping() -> io::Result<()> {
    sd_notify::notify(&[NotifyState::Stopping])
}

/// `EXTEND_TIMEOUT_USEC=...`: asks systemd for `extra` more time (microsecond
/// precision, at most about 71 minutes) before the current start or stop
/// times out; useful during a long start-up such as joining an etcd cluster.
pub fn extend_timeout(extra: Duration) -> io::Result<()> {
    let usec = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
    sd_notify::notify(&[NotifyState::ExtendTimeoutUsec(usec)])
}

/// How often to call [`watchdog`]: half of `$WATCHDOG_USEC` (microseconds),
/// as sd_watchdog_enabled(3) recommends. `None` when the watchdog is off:
/// `$WATCHDOG_USEC` unset, zero or unparsable, or `$WATCHDOG_PID` set to
/// another process.
pub fn watchdog_interval() -> Option<Duration> {
    sd_notify::watchdog_enabled()
        .filter(|d| !d.is_zero())
        .map(|d| d / 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::process::Command;

    /// Set in the environment of the re-executed test binary.
    const CHILD: &str = "DECKHAND_NOTIFY_TEST_CHILD";

    /// Runs in a child process (environment variables cannot be set safely in
    /// the multi-threaded test harness): sends every notification once.
    #[test]
    fn child_sends_notifications() {
        if std::env::var_os(CHILD).is_none() {
            return;
        }
        ready().expect("ready");
        status("joining\ncluster").expect("status");
        watchdog().expect("watchdog");
        extend_timeout(Duration::from_secs(90)).expect("extend");
        stopping().expect("stopping");
        assert_eq!(watchdog_interval(), Some(Duration::from_secs(5)));
    }

    #[test]
    fn no_op_without_notify_socket() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            return; // the tests themselves run under systemd
        }
        ready().expect("ready");
        status("x").expect("status");
        watchdog().expect("watchdog");
        stopping().expect("stopping");
    }

    #[test]
    fn sends_datagrams_to_notify_socket() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock_path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&sock_path).expect("bind");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");

        let exe = std::env::current_exe().expect("current_exe");
        let out = Command::new(exe)
            .args([
                "--exact",
                "notify::tests::child_sends_notifications",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "10000000")
            .env_remove("WATCHDOG_PID")
            .output()
            .expect("run child");
        assert!(
            out.status.success(),
            "child failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );

        let mut got = Vec::new();
        let mut buf = [0u8; 512];
        for _ in 0..5 {
            let n = sock.recv(&mut buf).expect("datagram");
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert_eq!(
            got,
            [
                "READY=1\n",
                "STATUS=joining cluster\n",
                "WATCHDOG=1\n",
                "EXTEND_TIMEOUT_USEC=90000000\n",
                "STOPPING=1\n",
            ]
        );
    }
}
