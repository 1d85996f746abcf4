//! Connections to etcd, shared by the agent, the CLI and `deckhand preseed`:
//! which endpoints to try and in which order, the first member that
//! answers, the agent's client of `localhost:2379`, and an etcd client
//! error in few words.
//!
//! One endpoint per client: etcd-client balances requests over all the
//! endpoints it is given, dead ones included, so a client built from a list
//! with one down member would fail some of its requests. So a list is
//! tried in order and the first endpoint that answers a status request is
//! kept.

use std::path::Path;
use std::time::Duration;

use anyhow::{Result, bail};
use deckhand_etcd::Tls;
use deckhand_model::Keyspace;
use etcd_client::{Client, ConnectOptions};

use crate::config::{self, Settings};
use crate::exit::Failure;
use crate::tls::CliFiles;

/// The client URL every node serves: its member or its grpc-proxy.
pub const LOCALHOST_CLIENT_URL: &str = "http://127.0.0.1:2379";

/// Timeout of one request on a CLI connection.
pub const CLI_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Where a CLI command talks to: the endpoints to try, in order, and the
/// key prefix.
#[derive(Debug, Clone)]
pub struct Target {
    /// Tried in order by [`first_answering`]: `--endpoints` if given, else
    /// `localhost:2379` then the agent config's `etcd.endpoints`.
    pub endpoints: Vec<String>,
    /// `--endpoints` as given (empty when not given).
    pub cli_endpoints: Vec<String>,
    /// The agent config's `etcd.endpoints` (real members), if a config was read.
    pub config_endpoints: Vec<String>,
    /// `--prefix`, else the config's `key_prefix`, else `/deckhand`.
    pub keyspace: Keyspace,
    /// The agent config, when there is one.
    pub settings: Option<Settings>,
    /// Mutual TLS for `https://` endpoints: `--cacert/--cert/--key` (or
    /// `ETCDCTL_CACERT/ETCDCTL_CERT/ETCDCTL_KEY`), else the agent config's
    /// `[tls]` files; `None` when neither is given.
    pub tls: Option<Tls>,
    /// Why the agent config's `[tls]` files could not be used (e.g. a
    /// user who may not read the node key): said when an `https://`
    /// endpoint then goes unanswered.
    pub tls_error: Option<String>,
}

impl Target {
    /// [`Target::tls`] as a reference.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }
}

/// What to say about an `https://` endpoint tried without TLS material.
pub const TLS_HINT: &str = "give --cacert, --cert and --key (or ETCDCTL_CACERT, ETCDCTL_CERT, ETCDCTL_KEY), e.g. an operator certificate from `deckhand pki issue --operator NAME DIR`";

/// `--endpoints` as given, else `ETCDCTL_ENDPOINTS` from `env`
/// (comma-separated, as etcdctl reads it). `DECKHAND_ENDPOINTS` is read by
/// the parser itself, before either.
pub fn endpoints_or_env(cli: Vec<String>, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    if !cli.is_empty() {
        return cli;
    }
    env("ETCDCTL_ENDPOINTS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

/// Why an endpoint given on the command line (or in `ETCDCTL_ENDPOINTS`)
/// cannot be dialled, or `None` when it can: a scheme other than `http`
/// and `https`, or no host, or a port that is not a number. etcd-client
/// dials `HOST:PORT` without a scheme as `http://HOST:PORT`.
pub fn endpoint_error(endpoint: &str) -> Option<String> {
    let rest = match endpoint.split_once("://") {
        Some(("http" | "https", rest)) => rest,
        Some((scheme, _)) => {
            return Some(format!(
                "endpoint {endpoint:?}: scheme {scheme:?} is not http or https"
            ));
        }
        None => endpoint,
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let (host, port) = match authority.strip_prefix('[') {
        // [v6]:port
        Some(v6) => match v6.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => ("", None),
        },
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    if host.is_empty() {
        return Some(format!("endpoint {endpoint:?} names no host"));
    }
    match port {
        Some(p) if p.parse::<u16>().is_err() => {
            Some(format!("endpoint {endpoint:?}: port {p:?} is not a number"))
        }
        _ => None,
    }
}

/// An endpoint as deckhand's client dials it: `HOST:PORT` without a
/// scheme is `http://HOST:PORT`, as etcdctl reads it; a URL is itself.
pub fn with_scheme(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Works out a CLI command's [`Target`] from the agent config at
/// `config_path` (a missing file is fine) and the command-line overrides,
/// `tls_files` with the `ETCDCTL_*` variables already applied
/// ([`CliFiles::or_env`]).
///
/// # Errors
/// [`crate::exit::CONFIG`] when the config file exists but cannot be read or
/// is invalid, unless both `--endpoints` and `--prefix` were given (then
/// nothing is taken from it, and a warning says so): a command must not
/// write to a default prefix while the operator's config says another.
/// [`crate::exit::USAGE`] when TLS files given on the command line (or in
/// `ETCDCTL_*`) cannot be used: unreadable, invalid, expired, not issued
/// by the CA, or not matching the key (the message names the file).
pub fn target(
    config_path: &Path,
    cli_endpoints: Vec<String>,
    cli_prefix: Option<String>,
    tls_files: CliFiles,
) -> Result<Target, Failure> {
    if let Some(bad) = cli_endpoints.iter().find_map(|e| endpoint_error(e)) {
        return Err(Failure::usage(anyhow::anyhow!(
            "{bad} (an endpoint is http://HOST:PORT, https://HOST:PORT or HOST:PORT, as etcdctl takes it)"
        )));
    }
    let cli_endpoints: Vec<String> = cli_endpoints.iter().map(|e| with_scheme(e)).collect();
    let settings = match config::load_optional(config_path) {
        Ok(s) => s.map(crate::tls_enable::effective),
        Err(e) if !cli_endpoints.is_empty() && cli_prefix.is_some() => {
            eprintln!(
                "deckhand: warning: ignoring the agent config ({e:#}); using --endpoints and --prefix"
            );
            None
        }
        Err(e) => {
            return Err(Failure::config(e.context(format!(
                "cannot use the agent config {} (fix it, or give both --endpoints and --prefix to work without it)",
                config_path.display()
            ))));
        }
    };
    let config_endpoints = settings
        .as_ref()
        .map(|s| s.endpoints.clone())
        .unwrap_or_default();
    let mut endpoints = cli_endpoints.clone();
    if endpoints.is_empty() {
        endpoints.push(LOCALHOST_CLIENT_URL.to_string());
        endpoints.extend(config_endpoints.iter().cloned());
    }
    let prefix = cli_prefix
        .or_else(|| settings.as_ref().map(|s| s.key_prefix.clone()))
        .unwrap_or_else(|| Keyspace::DEFAULT_PREFIX.to_string());
    let config_tls = settings.as_ref().and_then(|s| s.tls.as_ref());
    let now = crate::agent::observe::unix_now();
    let (tls, tls_error) = if tls_files.any() {
        let tls = tls_files.load(config_tls, now).map_err(|e| Failure {
            code: crate::exit::USAGE,
            error: e.context("cannot use the TLS files given (--cacert/--cert/--key or ETCDCTL_*)"),
        })?;
        (Some(tls), None)
    } else if let Some(t) = config_tls {
        match tls_files.load(Some(t), now) {
            Ok(tls) => (Some(tls), None),
            Err(e) => (
                None,
                Some(format!(
                    "the agent config's [tls] files cannot be used: {e:#}"
                )),
            ),
        }
    } else {
        (None, None)
    };
    Ok(Target {
        endpoints,
        cli_endpoints,
        config_endpoints,
        keyspace: Keyspace::new(&prefix),
        settings,
        tls,
        tls_error,
    })
}

/// Connects to the first of `endpoints` that answers a status request
/// within `timeout` (one endpoint at a time, see the module doc). Requests
/// on the returned client time out after [`CLI_REQUEST_TIMEOUT`].
/// `https://` endpoints are asked with mutual TLS from `tls`; `http://`
/// ones in plaintext.
///
/// # Errors
/// No endpoint answered: each endpoint's reason in few words ([`root_cause`]);
/// for an `https://` endpoint without `tls`, which options to give.
pub async fn first_answering(
    endpoints: &[String],
    timeout: Duration,
    tls: Option<&Tls>,
) -> Result<Client> {
    let mut errors = Vec::new();
    for ep in endpoints {
        let opts = ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(CLI_REQUEST_TIMEOUT);
        let opts = match deckhand_etcd::tls::apply(opts, std::slice::from_ref(ep), tls) {
            Ok(o) => o,
            Err(reason) if tls.is_none() && deckhand_etcd::tls::is_https(ep) => {
                errors.push(format!("{reason}: {TLS_HINT}"));
                continue;
            }
            Err(reason) => {
                errors.push(reason);
                continue;
            }
        };
        match Client::connect([ep.as_str()], Some(opts)).await {
            Ok(mut c) => match tokio::time::timeout(timeout, c.status()).await {
                Ok(Ok(_)) => return Ok(c),
                Ok(Err(e)) => errors.push(format!("{ep}: {}", root_cause(&e))),
                Err(_) => errors.push(format!("{ep}: no answer within {} s", timeout.as_secs())),
            },
            Err(e) => errors.push(format!("{ep}: {}", root_cause(&e))),
        }
    }
    bail!("no etcd endpoint answered:\n  {}", errors.join("\n  "))
}

/// The agent's client of `localhost:2379` (its member or proxy), for keys,
/// watches and the lease: connect and request timeouts of `timeout`, HTTP/2
/// keep-alive pings every 5 s so that a dead connection is noticed. The
/// connection is lazy: this does not fail when nothing listens yet.
///
/// # Errors
/// The client could not be set up (a malformed URL).
pub async fn localhost(timeout: Duration) -> Result<Client> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(timeout)
        .with_timeout(timeout)
        .with_keep_alive(Duration::from_secs(5), timeout);
    Ok(Client::connect([LOCALHOST_CLIENT_URL], Some(opts)).await?)
}

/// An etcd client error in few words: for a refused connection "tcp
/// connect error: Connection refused (os error 111)", not the debug form of
/// the gRPC status around it.
pub fn root_cause(e: &etcd_client::Error) -> String {
    fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
        let mut last = e;
        while let Some(inner) = last.source() {
            last = inner;
        }
        last.to_string()
    }
    match e {
        etcd_client::Error::GRpcStatus(status) => match std::error::Error::source(status) {
            Some(inner) => format!("{}: {}", status.message(), innermost(inner)),
            None => status.message().to_string(),
        },
        other => innermost(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn endpoints_and_prefix_come_from_the_config_unless_given() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(
            dir.path(),
            "config.toml",
            "key_prefix = \"/k\"\n[etcd]\nendpoints = [\"http://10.0.0.1:2379\"]\n",
        );
        let t = target(&cfg, vec![], None, CliFiles::default()).unwrap();
        assert_eq!(t.endpoints, [LOCALHOST_CLIENT_URL, "http://10.0.0.1:2379"]);
        assert_eq!(t.keyspace.prefix(), "/k");
        let t = target(
            &cfg,
            vec!["http://127.0.0.2:2379".into()],
            Some("/p".into()),
            CliFiles::default(),
        )
        .unwrap();
        assert_eq!(t.endpoints, ["http://127.0.0.2:2379"]);
        assert_eq!(t.config_endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(t.keyspace.prefix(), "/p");
        // No config file at all: the defaults.
        let t = target(
            &dir.path().join("none.toml"),
            vec![],
            None,
            CliFiles::default(),
        )
        .unwrap();
        assert_eq!(t.endpoints, [LOCALHOST_CLIENT_URL]);
        assert_eq!(t.keyspace.prefix(), Keyspace::DEFAULT_PREFIX);
    }

    #[test]
    fn a_broken_config_is_reported_not_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = write(dir.path(), "config.toml", "[etcd\nendpoints = 1\n");
        let f = target(&cfg, vec![], None, CliFiles::default()).unwrap_err();
        assert_eq!(f.code, crate::exit::CONFIG);
        let msg = format!("{:#}", f.error);
        assert!(
            msg.contains("cannot use the agent config") && msg.contains("config.toml"),
            "{msg}"
        );
        // --endpoints alone is not enough: the prefix would be a guess.
        let f = target(
            &cfg,
            vec!["http://127.0.0.1:2379".into()],
            None,
            CliFiles::default(),
        )
        .unwrap_err();
        assert_eq!(f.code, crate::exit::CONFIG);
        // Both given: nothing is taken from the file.
        let t = target(
            &cfg,
            vec!["http://127.0.0.1:2379".into()],
            Some("/x".into()),
            CliFiles::default(),
        )
        .unwrap();
        assert!(t.settings.is_none());
        assert_eq!(t.keyspace.prefix(), "/x");
    }

    #[test]
    fn endpoints_fall_back_to_etcdctl_endpoints() {
        assert_eq!(endpoint_error("https://10.0.0.1:2379"), None);
        assert_eq!(endpoint_error("http://[::1]:2379"), None);
        assert_eq!(endpoint_error("127.0.0.1:2379"), None);
        assert_eq!(with_scheme("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(with_scheme("https://a:1"), "https://a:1");
        assert!(endpoint_error("ftp://x").unwrap().contains("\"ftp\""));
        assert!(endpoint_error("http://:2379").unwrap().contains("no host"));
        assert!(
            endpoint_error("http://a:b")
                .unwrap()
                .contains("not a number")
        );
        let env = |k: &str| (k == "ETCDCTL_ENDPOINTS").then(|| "https://a:1, https://b:2".into());
        assert_eq!(
            endpoints_or_env(vec![], env),
            ["https://a:1", "https://b:2"]
        );
        assert_eq!(
            endpoints_or_env(vec!["http://c:3".into()], env),
            ["http://c:3"]
        );
        assert!(endpoints_or_env(vec![], |_| None).is_empty());
    }

    #[tokio::test]
    async fn first_answering_over_tls_with_options_env_or_the_config() {
        let etcd = crate::testing::Etcd::start_tls().await;
        let dir = tempfile::tempdir().unwrap();
        let none = dir.path().join("none.toml");
        let t = Duration::from_secs(2);
        let eps = vec![etcd.url.clone()];
        // --cacert/--cert/--key (the operator's certificate).
        let tgt = target(&none, eps.clone(), Some("/t".into()), etcd.operator_files()).unwrap();
        let mut c = first_answering(&tgt.endpoints, t, tgt.tls()).await.unwrap();
        c.put("/t/k", "v", None).await.unwrap();
        // The same files through ETCDCTL_*, endpoints through ETCDCTL_ENDPOINTS.
        let op = etcd.operator_files();
        let env = |k: &str| {
            let p = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
            match k {
                "ETCDCTL_CACERT" => p(&op.cacert),
                "ETCDCTL_CERT" => p(&op.cert),
                "ETCDCTL_KEY" => p(&op.key),
                "ETCDCTL_ENDPOINTS" => Some(etcd.url.clone()),
                _ => None,
            }
        };
        let files = CliFiles::default().or_env(env);
        let tgt = target(
            &none,
            endpoints_or_env(vec![], env),
            Some("/t".into()),
            files,
        )
        .unwrap();
        assert_eq!(tgt.endpoints, eps);
        first_answering(&tgt.endpoints, t, tgt.tls()).await.unwrap();
        // Nothing given: refused before connecting, saying what to give.
        let e = match first_answering(&eps, t, None).await {
            Ok(_) => panic!("an https endpoint answered without TLS"),
            Err(e) => format!("{e:#}"),
        };
        assert!(
            e.contains("--cacert, --cert and --key") && e.contains("ETCDCTL_CACERT"),
            "{e}"
        );
        // A client certificate from another CA: etcd refuses it.
        let other = deckhand_pki::Ca::create("other", 30).unwrap();
        let o = other.issue_operator("root", 30).unwrap();
        let ca = std::fs::read(etcd.operator_files().cacert.unwrap()).unwrap();
        let foreign = Tls::from_pem(ca, o.cert_pem, o.key_pem);
        assert!(first_answering(&eps, t, Some(&foreign)).await.is_err());
        // A file given that cannot be used: a usage error naming it.
        let bad = CliFiles {
            key: Some(dir.path().join("missing.key")),
            ..etcd.operator_files()
        };
        let f = target(&none, eps.clone(), Some("/t".into()), bad).unwrap_err();
        assert_eq!(f.code, crate::exit::USAGE);
        assert!(
            format!("{:#}", f.error).contains("missing.key"),
            "{:#}",
            f.error
        );
        // No option: the agent config's [tls] files and its https endpoints.
        let n = etcd.tls.as_ref().unwrap();
        let cfg = write(
            dir.path(),
            "config.toml",
            &format!(
                "key_prefix = \"/t\"\n[tls]\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\n\
                 proxy_cert_file = {:?}\nproxy_key_file = {:?}\n[etcd]\nendpoints = [{:?}]\n",
                n.ca_file, n.cert_file, n.key_file, n.proxy_cert_file, n.proxy_key_file, etcd.url
            ),
        );
        let tgt = target(&cfg, vec![], None, CliFiles::default()).unwrap();
        assert!(
            tgt.tls.is_some() && tgt.tls_error.is_none(),
            "{:?}",
            tgt.tls_error
        );
        let mut c = first_answering(&tgt.config_endpoints, t, tgt.tls())
            .await
            .unwrap();
        assert_eq!(c.get("/t/k", None).await.unwrap().kvs()[0].value(), b"v");
    }
}
