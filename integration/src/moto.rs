//! A real S3-compatible server for the backup tests: `moto`'s server
//! (PyPI `moto[server]`, installed by `integration/prereqs` into a venv at
//! [`MOTO_DIR`]), run on this host as a child process of the test.
//!
//! moto keeps its buckets in memory: [`Moto::stop`] (SIGKILL, so an upload
//! under way has its connection cut) and [`Moto::start`] again give an
//! empty server on the same address; [`Moto::create_bucket`] makes the
//! bucket anew. It does not check request signatures, and takes the
//! `x-amz-checksum-sha256` deckhand sends without checking it (tests
//! compare SHA-256s themselves).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The venv `integration/prereqs` installs moto into.
pub const MOTO_DIR: &str = "/opt/deckhand-moto";

/// The harness network's gateway (`integration/cluster`'s
/// `172.29.77.0/24`): this host's address on it, which the nodes reach.
pub const HARNESS_GATEWAY: &str = "172.29.77.1";

/// The moto server program: `$DECKHAND_MOTO` or `<MOTO_DIR>/bin/moto_server`.
pub fn moto_program() -> PathBuf {
    std::env::var_os("DECKHAND_MOTO")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(MOTO_DIR).join("bin/moto_server"))
}

/// moto answers some anonymous GETs (of `*.json` keys) with 403: a
/// signature-shaped header makes them a user's (moto does not check it).
const AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=0";

/// A running (or stopped) moto server on `host:port`.
pub struct Moto {
    /// The address it listens on.
    pub host: String,
    /// Its port.
    pub port: u16,
    child: Option<Child>,
    log: PathBuf,
}

impl Moto {
    /// Starts moto on `host` and a free port; waits until it answers.
    ///
    /// # Errors
    /// moto is not installed (run integration/prereqs), or it did not
    /// answer within 30 s (its log is quoted).
    pub fn start_on(host: &str) -> Result<Moto> {
        let port = TcpListener::bind((host, 0))
            .with_context(|| format!("no free port on {host}"))?
            .local_addr()?
            .port();
        let mut m = Moto {
            host: host.to_owned(),
            port,
            child: None,
            log: std::env::temp_dir().join(format!("deckhand-moto-{port}.log")),
        };
        m.start()?;
        Ok(m)
    }

    /// `http://host:port`.
    pub fn endpoint(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// Starts it (again) on its address: an empty server.
    ///
    /// # Errors
    /// As [`Moto::start_on`].
    pub fn start(&mut self) -> Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let prog = moto_program();
        if !prog.exists() {
            bail!(
                "{} is missing: integration/prereqs installs moto[server] there",
                prog.display()
            );
        }
        let log = std::fs::File::create(&self.log)?;
        let child = Command::new(&prog)
            .args(["-H", &self.host, "-p", &self.port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", prog.display()))?;
        self.child = Some(child);
        let addr: SocketAddr = format!("{}:{}", self.host, self.port).parse()?;
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(30) {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return Ok(());
            }
            if let Some(c) = self.child.as_mut()
                && let Some(st) = c.try_wait()?
            {
                self.child = None;
                bail!(
                    "moto exited ({st}): {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        bail!(
            "moto does not answer on {addr} after 30 s: {}",
            std::fs::read_to_string(&self.log).unwrap_or_default()
        )
    }

    /// Kills it (SIGKILL: connections under way are cut, its buckets gone).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it runs.
    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    fn curl(&self, args: &[&str]) -> Result<Vec<u8>> {
        let out = Command::new("curl")
            .args(["-sS", "--fail", "--max-time", "60", "-H", AUTH])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .context("running curl")?;
        if !out.status.success() {
            bail!(
                "curl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(out.stdout)
    }

    /// Makes bucket `name` (moto takes unsigned requests).
    ///
    /// # Errors
    /// The request failed.
    pub fn create_bucket(&self, name: &str) -> Result<()> {
        self.curl(&["-X", "PUT", &format!("{}/{name}", self.endpoint())])?;
        Ok(())
    }

    /// Puts file `file` as object `key` of `bucket` (a single PUT).
    ///
    /// # Errors
    /// The request failed.
    pub fn put_file(&self, bucket: &str, key: &str, file: &std::path::Path) -> Result<()> {
        // No `Expect: 100-continue`: moto's server does not answer it.
        self.curl(&[
            "-X",
            "PUT",
            "-H",
            "Expect:",
            "--data-binary",
            &format!("@{}", file.display()),
            &format!("{}/{bucket}/{key}", self.endpoint()),
        ])?;
        Ok(())
    }

    /// The object `key` of `bucket`, `None` if it does not exist.
    ///
    /// # Errors
    /// Another failure than a 404.
    pub fn get(&self, bucket: &str, key: &str) -> Result<Option<Vec<u8>>> {
        let url = format!("{}/{bucket}/{key}", self.endpoint());
        let out = Command::new("curl")
            .args([
                "-sS",
                "--max-time",
                "120",
                "-H",
                AUTH,
                "-w",
                "\n%{http_code}",
                &url,
            ])
            .stdin(Stdio::null())
            .output()
            .context("running curl")?;
        let mut body = out.stdout;
        let nl = body.iter().rposition(|&b| b == b'\n').unwrap_or(0);
        let code = String::from_utf8_lossy(&body[nl + 1..]).trim().to_owned();
        body.truncate(nl);
        match code.as_str() {
            "200" => Ok(Some(body)),
            "404" => Ok(None),
            _ => bail!("GET {url}: {code} {}", String::from_utf8_lossy(&out.stderr)),
        }
    }

    /// The keys of `bucket` under `prefix` (ListObjectsV2, up to 1000).
    ///
    /// # Errors
    /// The request failed.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Result<Vec<String>> {
        let xml = self.curl(&[&format!(
            "{}/{bucket}?list-type=2&prefix={prefix}",
            self.endpoint()
        )])?;
        let xml = String::from_utf8_lossy(&xml);
        Ok(xml
            .split("<Key>")
            .skip(1)
            .filter_map(|p| p.split_once("</Key>").map(|(k, _)| k.to_owned()))
            .collect())
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}
