//! Reading certificates back: their names, validity and fingerprint, whether
//! a CA signed them, whether a key is theirs.

use std::net::IpAddr;
use std::path::Path;

use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::Pem;

use crate::{Error, Result};

/// What a certificate says, as `deckhand pki show` prints it. Plain data:
/// tests of code that reports expiry may build one directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's first CN; `None` when the subject has none (a proxy's
    /// certificate).
    pub common_name: Option<String>,
    /// The issuer's first CN.
    pub issuer_common_name: Option<String>,
    /// notBefore, unix seconds.
    pub not_before_unix: u64,
    /// notAfter, unix seconds.
    pub not_after_unix: u64,
    /// IP address SANs, in the certificate's order.
    pub ip_sans: Vec<IpAddr>,
    /// DNS name SANs, in the certificate's order.
    pub dns_sans: Vec<String>,
    /// basicConstraints CA is true.
    pub is_ca: bool,
    /// The extended key usage includes serverAuth.
    pub server_auth: bool,
    /// The extended key usage includes clientAuth.
    pub client_auth: bool,
    /// The serial number, lowercase hex.
    pub serial_hex: String,
    /// SHA-256 of the certificate's DER, lowercase hex without separators
    /// (`openssl x509 -fingerprint -sha256` prints the same bytes in upper
    /// case with colons).
    pub sha256_fingerprint: String,
}

impl CertInfo {
    /// Reads the first certificate of a PEM text.
    ///
    /// # Errors
    /// [`Error::BadPem`] (named "certificate") when there is no PEM
    /// certificate or it does not parse.
    pub fn from_pem(pem: &str) -> Result<CertInfo> {
        let pem = parse_pem(pem, "certificate")?;
        let cert = parse_cert(&pem, "certificate")?;
        Ok(info_of(&cert, &pem.contents))
    }

    /// Reads the first certificate of a PEM file.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::BadPem`] naming
    /// the file when it holds no certificate.
    pub fn from_file(path: &Path) -> Result<CertInfo> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let text = String::from_utf8(bytes).map_err(|_| Error::BadPem {
            what: path.display().to_string(),
            expected: "PEM certificate",
            reason: "the file is binary, not PEM text (a DER certificate converts with \
                     `openssl x509 -inform der -in FILE -out FILE.pem`)"
                .into(),
        })?;
        CertInfo::from_pem(&text).map_err(|e| e.naming(&path.display().to_string()))
    }

    /// Seconds until notAfter from `now_unix` (unix seconds); negative once
    /// expired.
    pub fn seconds_left(&self, now_unix: u64) -> i64 {
        self.not_after_unix as i64 - now_unix as i64
    }

    /// notBefore as RFC 3339 UTC, `2026-12-02T10:15:16Z`.
    pub fn not_before_utc(&self) -> String {
        utc_rfc3339(self.not_before_unix)
    }

    /// notAfter as RFC 3339 UTC, `2027-12-02T10:15:16Z`.
    pub fn not_after_utc(&self) -> String {
        utc_rfc3339(self.not_after_unix)
    }

    /// Whether `now_unix` lies within notBefore..=notAfter.
    pub fn is_valid_at(&self, now_unix: u64) -> bool {
        self.not_before_unix <= now_unix && now_unix <= self.not_after_unix
    }
}

/// Checks that `cert_pem` was signed by the CA of `ca_pem`: the CA
/// certificate is a CA, the certificate's issuer name is the CA's subject,
/// and the signature verifies with the CA's public key (x509-parser's
/// `verify` feature, ring). Validity dates are not checked here (see
/// [`CertInfo::is_valid_at`]).
///
/// # Errors
/// [`Error::BadPem`] for either input, [`Error::NotCa`] when `ca_pem` is no
/// CA, [`Error::NotIssuedBy`] when the name or the signature does not match.
pub fn verify_issued_by(ca_pem: &str, cert_pem: &str) -> Result<()> {
    let ca_p = parse_pem(ca_pem, "CA certificate")?;
    let ca = parse_cert(&ca_p, "CA certificate")?;
    if !ca.is_ca() {
        return Err(Error::NotCa {
            what: "CA certificate".into(),
        });
    }
    let p = parse_pem(cert_pem, "certificate")?;
    let cert = parse_cert(&p, "certificate")?;
    if cert.issuer().as_raw() != ca.subject().as_raw() {
        return Err(Error::NotIssuedBy {
            what: "certificate".into(),
            reason: format!(
                "its issuer is {:?}, the CA is {:?}",
                cert.issuer().to_string(),
                ca.subject().to_string()
            ),
        });
    }
    cert.verify_signature(Some(ca.public_key()))
        .map_err(|e| Error::NotIssuedBy {
            what: "certificate".into(),
            reason: format!("the signature does not verify with the CA's key ({e})"),
        })
}

/// Whether the private key `key_pem` (PKCS#8 or SEC1 PEM) is the key of the
/// certificate `cert_pem`: their public keys are the same bytes.
///
/// # Errors
/// [`Error::BadPem`] when either does not parse.
pub fn key_matches(cert_pem: &str, key_pem: &str) -> Result<bool> {
    let p = parse_pem(cert_pem, "certificate")?;
    let cert = parse_cert(&p, "certificate")?;
    let key = rcgen::KeyPair::from_pem(key_pem).map_err(|e| Error::BadPem {
        what: "private key".into(),
        expected: "PEM private key",
        reason: e.to_string(),
    })?;
    Ok(cert.public_key().subject_public_key.data.as_ref() == key.public_key_raw())
}

/// Unix seconds as RFC 3339 UTC with seconds, `2026-12-02T10:15:16Z`
/// (times past year 9999 print as unix seconds).
pub fn utc_rfc3339(unix: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix as i64) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("@{unix}"),
    }
}

pub(crate) fn parse_pem(text: &str, what: &str) -> Result<Pem> {
    let (_, pem) =
        x509_parser::pem::parse_x509_pem(text.as_bytes()).map_err(|e| Error::BadPem {
            what: what.into(),
            expected: "PEM certificate",
            reason: e.to_string(),
        })?;
    if pem.label != "CERTIFICATE" {
        return Err(Error::BadPem {
            what: what.into(),
            expected: "PEM certificate",
            reason: format!("the PEM block is a {:?}, not a CERTIFICATE", pem.label),
        });
    }
    Ok(pem)
}

pub(crate) fn parse_cert<'a>(pem: &'a Pem, what: &str) -> Result<X509Certificate<'a>> {
    pem.parse_x509().map_err(|e| Error::BadPem {
        what: what.into(),
        expected: "PEM certificate",
        reason: e.to_string(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn info_of(cert: &X509Certificate<'_>, der: &[u8]) -> CertInfo {
    let cn = |name: &x509_parser::x509::X509Name<'_>| {
        name.iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .map(str::to_owned)
    };
    let mut ip_sans = Vec::new();
    let mut dns_sans = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => dns_sans.push((*d).to_owned()),
                GeneralName::IPAddress(b) => match b.len() {
                    4 => ip_sans.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))),
                    16 => ip_sans.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))),
                    _ => {}
                },
                _ => {}
            }
        }
    }
    let (server_auth, client_auth) = match cert.extended_key_usage() {
        Ok(Some(eku)) => (eku.value.server_auth, eku.value.client_auth),
        _ => (false, false),
    };
    let validity = cert.validity();
    CertInfo {
        common_name: cn(cert.subject()),
        issuer_common_name: cn(cert.issuer()),
        not_before_unix: validity.not_before.timestamp().max(0) as u64,
        not_after_unix: validity.not_after.timestamp().max(0) as u64,
        ip_sans,
        dns_sans,
        is_ca: cert.is_ca(),
        server_auth,
        client_auth,
        serial_hex: hex(cert.raw_serial()),
        sha256_fingerprint: hex(ring::digest::digest(&ring::digest::SHA256, der).as_ref()),
    }
}
