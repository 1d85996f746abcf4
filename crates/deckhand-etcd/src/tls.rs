//! Client-side mutual TLS for etcd connections: the CA that signed the
//! members' certificates and this client's own certificate and key, all
//! PEM, turned into etcd-client's [`etcd_client::TlsOptions`] (tonic's
//! rustls client config, ring provider) for `https://` endpoints.
//!
//! etcd with `--client-cert-auth` / `--peer-client-cert-auth` refuses a
//! client without a certificate signed by its trusted CA
//! (<https://etcd.io/docs/v3.4/op-guide/security/>). `http://` endpoints
//! (the node's own `localhost:2379`) stay plaintext: etcd-client refuses
//! TLS options on an `http://` URL.

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

/// PEM material for a TLS client: the trusted CA bundle and the client's
/// certificate (chain) and private key. Cheap to clone; its `Debug` never
/// shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct Tls {
    ca: Vec<u8>,
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &format_args!("{} bytes of PEM", self.ca.len()))
            .field("cert", &format_args!("{} bytes of PEM", self.cert.len()))
            .field("key", &"<redacted>")
            .finish()
    }
}

impl Tls {
    /// From PEM text: `ca` the CA certificate(s) that signed the members'
    /// server certificates, `cert` this client's certificate, `key` its
    /// private key (PKCS#8, SEC1 or PKCS#1). Nothing is parsed here; a
    /// malformed PEM shows up as a failed connection (check the files
    /// first, as deckhand's config loading does).
    pub fn from_pem(
        ca: impl Into<Vec<u8>>,
        cert: impl Into<Vec<u8>>,
        key: impl Into<Vec<u8>>,
    ) -> Tls {
        Tls {
            ca: ca.into(),
            cert: cert.into(),
            key: key.into(),
        }
    }

    /// The CA bundle, PEM.
    pub fn ca_pem(&self) -> &[u8] {
        &self.ca
    }

    /// The client certificate, PEM.
    pub fn cert_pem(&self) -> &[u8] {
        &self.cert
    }

    /// etcd-client's options for this identity. The server name checked
    /// is the endpoint URL's host (an IP address is matched against the
    /// certificate's IP SANs), as etcd's own clients do. HTTP/2 is assumed
    /// rather than required by ALPN.
    pub fn options(&self) -> TlsOptions {
        TlsOptions::new()
            .ca_certificate(Certificate::from_pem(&self.ca))
            .identity(Identity::from_pem(&self.cert, &self.key))
            .assume_http2(true)
    }
}

/// Whether a client URL is `https://`.
pub fn is_https(url: &str) -> bool {
    url.starts_with("https://")
}

/// Adds TLS to `opts` for `endpoints`: all `http://` gives `opts`
/// unchanged (plaintext, whatever `tls` is); all `https://` needs `tls`.
///
/// # Errors
/// The reason in words: a list mixing `http://` and `https://`, an
/// `https://` endpoint without TLS material, or a URL of another scheme.
pub fn apply(
    opts: ConnectOptions,
    endpoints: &[String],
    tls: Option<&Tls>,
) -> Result<ConnectOptions, String> {
    if let Some(bad) = endpoints
        .iter()
        .find(|e| !e.starts_with("http://") && !is_https(e))
    {
        return Err(format!("{bad} is neither an http:// nor an https:// URL"));
    }
    let https = endpoints.iter().filter(|e| is_https(e)).count();
    if https == 0 {
        return Ok(opts);
    }
    if https != endpoints.len() {
        return Err(format!(
            "{} mixes http:// and https:// URLs; give one kind",
            endpoints.join(",")
        ));
    }
    match tls {
        Some(t) => Ok(opts.with_tls(t.options())),
        None => Err(format!(
            "{} is an https:// URL, but no CA and client certificate were given for it",
            endpoints[0]
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_decide_and_mixed_lists_are_refused() {
        let tls = Tls::from_pem("ca", "cert", "key");
        let http = vec!["http://127.0.0.1:2379".to_string()];
        let https = vec!["https://10.0.0.1:2379".to_string()];
        assert!(apply(ConnectOptions::new(), &http, Some(&tls)).is_ok());
        assert!(apply(ConnectOptions::new(), &http, None).is_ok());
        assert!(apply(ConnectOptions::new(), &https, Some(&tls)).is_ok());
        let e = apply(ConnectOptions::new(), &https, None).unwrap_err();
        assert!(e.contains("no CA and client certificate"), "{e}");
        let mixed = [http[0].clone(), https[0].clone()];
        assert!(
            apply(ConnectOptions::new(), &mixed, Some(&tls))
                .unwrap_err()
                .contains("mixes")
        );
        assert!(
            apply(ConnectOptions::new(), &["unix:///x".into()], Some(&tls))
                .unwrap_err()
                .contains("neither")
        );
        assert!(!format!("{tls:?}").contains("key\""));
        assert!(format!("{tls:?}").contains("redacted"));
    }
}
