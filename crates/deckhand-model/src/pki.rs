//! The certificate join and renewal flow's keys: a node's request
//! (`pki/requests/<node-id>`), the certificates issued for it
//! (`pki/issued/<node-id>`), a refusal (`pki/refused/<node-id>`) and an
//! operator's approval (`pki/approvals/<node-id>`). See `docs/keyspace.md`
//! and `docs/pki.md`.

use serde::{Deserialize, Serialize};

/// Largest request, issued, refusal or approval value accepted, in bytes
/// (a request holds two CSRs and, for a renewal, a certificate: about
/// 2.5 KiB).
pub const MAX_PKI_VALUE_BYTES: usize = 16 * 1024;

/// Why a node asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestKind {
    /// A new node with no certificate yet (it came up with the join
    /// credential only).
    Join,
    /// A node renewing its certificate; the request carries its current
    /// certificate, and the challenge's answer is also signed with that
    /// certificate's key.
    Renew,
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestKind::Join => "join",
            RequestKind::Renew => "renew",
        })
    }
}

/// The value of `pki/requests/<node-id>`, written by the node itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRequest {
    /// The node name: the certificate's CN is `node:<name>`.
    pub name: String,
    /// The node's address (an IP address): a SAN of the certificate, and
    /// where the signer sends its challenge (port [`CHALLENGE_PORT`]).
    pub address: String,
    /// The node certificate's CSR (PEM), made on the node.
    pub csr_pem: String,
    /// The grpc-proxy certificate's CSR (PEM, empty subject), made on the
    /// node.
    pub proxy_csr_pem: String,
    /// Join or renew.
    pub kind: RequestKind,
    /// A renewal's current node certificate (PEM); `None` for a join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_cert_pem: Option<String>,
    /// When the node wrote it, its Unix seconds (shown, never compared).
    pub created_unix: u64,
}

/// The port a requester listens on for the signer's challenge while its
/// request is open.
pub const CHALLENGE_PORT: u16 = 2381;

/// The value of `pki/issued/<node-id>`, written by the signer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertIssued {
    /// The SHA-256 (hex) of the request's `csr_pem` this answers: a node
    /// ignores an answer to an older request.
    pub csr_sha256: String,
    /// The node certificate (PEM).
    pub cert_pem: String,
    /// The grpc-proxy certificate (PEM).
    pub proxy_cert_pem: String,
    /// The CA certificate (PEM).
    pub ca_pem: String,
    /// The signer's node name.
    pub signer: String,
}

/// The value of `pki/refused/<node-id>`, written by the signer: the request
/// with this CSR was not signed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertRefusal {
    /// The SHA-256 (hex) of the refused request's `csr_pem`.
    pub csr_sha256: String,
    /// Why, in words.
    pub reason: String,
    /// The signer's node name.
    pub signer: String,
}

/// The value of `pki/approvals/<node-id>`, written by `deckhand pki
/// approve`: the request with this CSR may be signed while
/// `pki.auto_sign` is off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertApproval {
    /// The SHA-256 (hex) of the approved request's `csr_pem`: a later
    /// request (another key) needs its own approval.
    pub csr_sha256: String,
    /// Who approved it (the CLI's user and host), in words.
    pub by: String,
}

/// Parses one of the pki values, refusing values over
/// [`MAX_PKI_VALUE_BYTES`].
///
/// # Errors
/// Too large, or not JSON of the shape `T`; in words.
pub fn parse<T: serde::de::DeserializeOwned>(value: &[u8]) -> Result<T, String> {
    if value.len() > MAX_PKI_VALUE_BYTES {
        return Err(format!(
            "{} bytes, larger than the {MAX_PKI_VALUE_BYTES} bytes allowed",
            value.len()
        ));
    }
    serde_json::from_slice(value).map_err(|e| format!("not valid JSON of the expected shape ({e})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_round_trips_and_unknown_fields_are_refused() {
        let r = CertRequest {
            name: "n4".into(),
            address: "10.0.0.4".into(),
            csr_pem: "c".into(),
            proxy_csr_pem: "p".into(),
            kind: RequestKind::Join,
            current_cert_pem: None,
            created_unix: 7,
        };
        let json = serde_json::to_vec(&r).unwrap();
        assert!(String::from_utf8_lossy(&json).contains(r#""kind":"join""#));
        assert_eq!(parse::<CertRequest>(&json).unwrap(), r);
        assert!(parse::<CertRequest>(br#"{"name":"x","extra":1}"#).is_err());
        assert!(parse::<CertRequest>(&vec![b' '; MAX_PKI_VALUE_BYTES + 1]).is_err());
    }
}
