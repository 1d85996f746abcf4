//! Real parts for the preseed tests: the host's Docker daemon and a real
//! registry (Debian's `docker-registry`, the distribution registry 2.x) on a
//! free loopback port, serving small images built `FROM scratch` here.
//! Nothing comes from the internet.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

/// User and password of [`Registry::start_with_auth`].
pub const USER: &str = "deckhand";
/// The password of [`USER`].
pub const PASSWORD: &str = "deckhand-test-password";
/// bcrypt of [`PASSWORD`] (cost 4), for the registry's htpasswd file.
const PASSWORD_BCRYPT: &str = "$2b$04$AGwzLOxnMyY6AReIV3hLxu6U5NJf9guJSgnGbNm7syHNXYZBo0heS";

impl Registry {
    /// Starts a registry and waits until it answers `GET /v2/`.
    pub fn start() -> Registry {
        Registry::start_inner(false)
    }

    /// Starts a registry that wants basic auth ([`USER`], [`PASSWORD`]).
    pub fn start_with_auth() -> Registry {
        Registry::start_inner(true)
    }

    fn start_inner(auth: bool) -> Registry {
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
                "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{}",
                dir.path().join("storage").display(),
                if auth {
                    format!(
                        "auth:\n  htpasswd:\n    realm: deckhand-test\n    path: {}\n",
                        dir.path().join("htpasswd").display()
                    )
                } else {
                    String::new()
                }
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("htpasswd"),
            format!("{USER}:{PASSWORD_BCRYPT}\n"),
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

/// A TCP proxy to a registry that forwards requests, but stops answering
/// (keeping every connection open, sending nothing) once it has passed
/// `budget` bytes of answers in all: a registry that stalls mid-pull.
pub struct StallingProxy {
    pub port: u16,
    stop: Arc<AtomicBool>,
}

impl StallingProxy {
    pub fn start(target_port: u16, budget: u64) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let stop2 = stop.clone();
        std::thread::spawn(move || {
            while !stop2.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", target_port)) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                });
                let (mut s_in, mut c_out) = (server, client);
                let (stop3, sent) = (stop2.clone(), sent.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16 * 1024];
                    loop {
                        let room = budget.saturating_sub(sent.load(Ordering::Relaxed));
                        if room == 0 {
                            // Stall: hold the connection, say nothing.
                            while !stop3.load(Ordering::Relaxed) {
                                std::thread::sleep(Duration::from_millis(50));
                            }
                            return;
                        }
                        let want = buf.len().min(usize::try_from(room).unwrap_or(buf.len()));
                        match s_in.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                sent.fetch_add(n as u64, Ordering::Relaxed);
                                if c_out.write_all(&buf[..n]).is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        StallingProxy { port, stop }
    }
}

impl Drop for StallingProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Logs in to `registry` with a Docker client config in `dir` (not the
/// host user's), returning the `config.json` path: `docker login` writes
/// `auths.<host>.auth` there.
pub fn login(registry: &Registry, dir: &Path) -> PathBuf {
    let mut child = Command::new("docker")
        .env("DOCKER_CONFIG", dir)
        .args([
            "login",
            "--username",
            USER,
            "--password-stdin",
            &registry.host(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "docker login: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    dir.join("config.json")
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
        self.push_as(registry, repo, random_bytes, None)
    }

    /// [`Images::push`] with the Docker client config in `docker_config`
    /// (for a registry that wants a login).
    pub fn push_as(
        &self,
        registry: &Registry,
        repo: &str,
        random_bytes: usize,
        docker_config: Option<&Path>,
    ) -> Pushed {
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
        // No build cache: a cached `COPY busybox` step would share its
        // intermediate image with another test's build, and that test's
        // `docker rmi` prunes it (an untagged parent) while this build still
        // needs it ("unknown parent image ID").
        docker(&[
            "build",
            "--no-cache",
            "-q",
            "-t",
            &tagged,
            dir.path().to_str().unwrap(),
        ]);
        let id = docker(&["image", "inspect", "--format", "{{.Id}}", &tagged]);
        self.ids.lock().unwrap().push(id.clone());
        match docker_config {
            Some(dir) => docker(&["--config", dir.to_str().unwrap(), "push", "-q", &tagged]),
            None => docker(&["push", "-q", &tagged]),
        };
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
