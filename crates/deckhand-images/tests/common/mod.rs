//! Real parts for the preseed tests: the host's Docker daemon and a real
//! registry (Debian's `docker-registry`, the distribution registry 2.x) on a
//! free loopback port, serving small images built `FROM scratch` here.
//! Nothing comes from the internet.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The daemon's socket.
pub const SOCKET: &str = "/var/run/docker.sock";

/// Fails loudly when there is no Docker daemon: these tests are the
/// preseed's proof, CI has Docker (integration/prereqs starts it).
pub fn require_docker() {
    let out = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "these tests need a running Docker daemon at {SOCKET}, and `docker info` failed: {}\n\
             Start it (integration/prereqs does) and run again.",
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Err(e) => panic!(
            "these tests need the docker CLI and a running Docker daemon: cannot run `docker`: {e}\n\
             Install Docker (integration/prereqs checks it) and run again."
        ),
    }
}

/// Runs `docker <args>`, panicking with its output when it fails.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker")
        .args(args)
        // The classic builder: BuildKit's may need its buildx plugin, and
        // none of this needs BuildKit.
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .expect("running docker");
    assert!(
        out.status.success(),
        "docker {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A unique name part for this test's repositories.
pub fn unique(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("deckhand-test-{}-{nanos:x}-{test}", std::process::id())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `docker-registry serve` process on a free loopback port with its
/// storage in a temp dir; killed on drop.
pub struct Registry {
    pub port: u16,
    child: Mutex<Option<Child>>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`.
    pub fn start() -> Registry {
        let bin = ["/usr/bin/docker-registry", "/usr/local/bin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or_else(|| {
                panic!(
                    "docker-registry is not installed: these tests need Debian's docker-registry \
                     package (run integration/prereqs, or apt-get install docker-registry)"
                )
            });
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let r = Registry {
            port,
            child: Mutex::new(None),
            config,
            _dir: dir,
        };
        r.spawn(bin);
        r
    }

    fn spawn(&self, bin: &str) {
        let child = Command::new(bin)
            .arg("serve")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry");
        *self.child.lock().unwrap() = Some(child);
        let start = Instant::now();
        while !self.answers() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "docker-registry did not answer on 127.0.0.1:{} within 30 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn answers(&self) -> bool {
        let addr: SocketAddr = format!("127.0.0.1:{}", self.port).parse().unwrap();
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
    }

    /// `127.0.0.1:<port>`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Stops the registry (SIGKILL) and waits for it.
    pub fn stop(&self) {
        if let Some(mut c) = self.child.lock().unwrap().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Images this test built and pushed; every one is removed from the
/// daemon on drop (by image id: tags and digests alike).
pub struct Images {
    ids: Mutex<Vec<String>>,
}

/// One pushed test image.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// `127.0.0.1:<port>/<repo>:1`.
    pub tagged: String,
    /// `127.0.0.1:<port>/<repo>@sha256:...` (the manifest digest).
    pub digested: String,
    /// The image id (config digest).
    pub id: String,
}

impl Images {
    pub fn new() -> Images {
        Images {
            ids: Mutex::new(Vec::new()),
        }
    }

    /// Builds an image `FROM scratch` with Debian's static busybox and
    /// `random_bytes` of random data, pushes it as `<registry>/<repo>:1`,
    /// and removes the local copy, so that the daemon does not have it.
    pub fn push(&self, registry: &Registry, repo: &str, random_bytes: usize) -> Pushed {
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.exists(),
            "/bin/busybox is missing: install busybox-static (integration/prereqs)"
        );
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(busybox, dir.path().join("busybox")).unwrap();
        let mut data = vec![0u8; random_bytes];
        std::fs::File::open("/dev/urandom")
            .unwrap()
            .read_exact(&mut data)
            .unwrap();
        std::fs::write(dir.path().join("data"), &data).unwrap();
        std::fs::write(
            dir.path().join("Dockerfile"),
            "FROM scratch\nCOPY busybox /bin/busybox\nCOPY data /data\nCMD [\"/bin/busybox\", \"true\"]\n",
        )
        .unwrap();
        let tagged = format!("{}/{repo}:1", registry.host());
        docker(&["build", "-q", "-t", &tagged, dir.path().to_str().unwrap()]);
        let id = docker(&["image", "inspect", "--format", "{{.Id}}", &tagged]);
        self.ids.lock().unwrap().push(id.clone());
        docker(&["push", "-q", &tagged]);
        let digested = docker(&[
            "image",
            "inspect",
            "--format",
            "{{index .RepoDigests 0}}",
            &tagged,
        ]);
        docker(&["rmi", &tagged]);
        Pushed {
            tagged,
            digested,
            id,
        }
    }

    /// Removes the image from the daemon (all its names).
    pub fn remove(&self, p: &Pushed) {
        let _ = Command::new("docker").args(["rmi", "-f", &p.id]).output();
    }

    /// Whether the daemon has the image (by id).
    pub fn has(&self, p: &Pushed) -> bool {
        Command::new("docker")
            .args(["image", "inspect", &p.id])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

impl Drop for Images {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().iter() {
            let _ = Command::new("docker")
                .args(["rmi", "-f", id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
