//! deckhand's cluster certificate authority: the CA, the certificates a node
//! and an operator need for etcd's mutual TLS, CSRs for the join flow, and
//! reading certificates back.
//!
//! # Algorithm and lifetimes
//! Every key is ECDSA P-256 and every signature ECDSA with SHA-256
//! (`ecdsa-with-SHA256`). Go's `crypto/tls` (etcd, etcdctl), rustls with ring
//! (the agent and the CLI) and OpenSSL all support it; its keys and
//! signatures are small (a certificate is ~600 bytes) and fast to make and
//! check. The CA lives [`CA_DAYS`] (10 years), leaves [`LEAF_DAYS`] (1 year),
//! the choices of kubeadm; both are settable in days. Renewal through the
//! agent is a later piece. `not_before` is set [`BACKDATE_SECONDS`] in the
//! past, so a host whose clock is a little behind accepts a fresh
//! certificate. Serial numbers are 128 random bits (RFC 5280 asks for at
//! most 20 bytes; CA/Browser practice for at least 64 random bits).
//!
//! # Certificates and names (what etcd relies on)
//! See etcd's TLS guide, <https://etcd.io/docs/v3.4/op-guide/security/>.
//! - **Node** ([`Ca::issue_node`]): server and client (EKU serverAuth and
//!   clientAuth: an etcd member reuses its server certificate as its client
//!   certificate towards its peers). CN `node:<name>`: with
//!   `--client-cert-auth` and auth on, etcd takes the CN of a client
//!   certificate as the etcd user name, so `node:<name>` is the node's etcd
//!   user. SANs: the node's address, 127.0.0.1, ::1, `localhost` and
//!   `<name>` (etcd checks a peer's certificate against the peer's address).
//! - **Proxy** ([`Ca::issue_proxy`]): the client certificate of the node's
//!   `etcd grpc-proxy` towards the members. Its CN is empty: etcd's
//!   grpc-proxy refuses to start with a client certificate that has a CN
//!   (the CN would be taken as a user name for all its clients).
//! - **Operator** ([`Ca::issue_operator`]): a client certificate whose CN is
//!   the operator's etcd user name verbatim (`root` for full rights).
//!
//! Keys are PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), certificates PEM.

mod ca;
mod error;
mod files;
mod info;
mod names;
mod proof;

pub use ca::{Ca, Issued, generate_csr, generate_proxy_csr};
pub use error::{Error, Result};
pub use files::{CERT_MODE, KEY_MODE, write_new_file};
pub use info::{CertInfo, key_matches, utc_rfc3339, verify_issued_by};
pub use names::{check_node_address, check_node_name, check_operator_name, node_common_name};
pub use proof::{
    cert_public_key, csr_public_key, random_nonce, sha256_hex, sign_message, verify_message,
};

/// The CA's default lifetime, days (10 years, as kubeadm's etcd CA).
pub const CA_DAYS: u32 = 3650;
/// A leaf certificate's default lifetime, days (1 year, as kubeadm's).
pub const LEAF_DAYS: u32 = 365;
/// The longest lifetime accepted, days (100 years).
pub const MAX_DAYS: u32 = 36_500;
/// How far `not_before` lies before the moment of issue, seconds: room for
/// clock skew between the host that issues and the hosts that check.
pub const BACKDATE_SECONDS: i64 = 5 * 60;
/// The CA certificate's file name in a CA directory.
pub const CA_CERT_FILE: &str = "ca.crt";
/// The CA key's file name in a CA directory.
pub const CA_KEY_FILE: &str = "ca.key";
/// Where a node's certificate files are installed (the agent config's
/// defaults point here): `ca.crt`, [`NODE_CERT_FILE`], [`NODE_KEY_FILE`],
/// [`PROXY_CERT_FILE`], [`PROXY_KEY_FILE`].
pub const NODE_PKI_DIR: &str = "/etc/deckhand/pki";
/// A node's certificate file name (server and client, CN `node:<name>`).
pub const NODE_CERT_FILE: &str = "node.crt";
/// A node's key file name.
pub const NODE_KEY_FILE: &str = "node.key";
/// A node's grpc-proxy client certificate file name (empty CN).
pub const PROXY_CERT_FILE: &str = "proxy.crt";
/// A node's grpc-proxy key file name.
pub const PROXY_KEY_FILE: &str = "proxy.key";
/// An operator's certificate file name (under `DIR/operators/<name>/`).
pub const OPERATOR_CERT_FILE: &str = "operator.crt";
/// An operator's key file name.
pub const OPERATOR_KEY_FILE: &str = "operator.key";
/// The CA's default common name.
pub const CA_DEFAULT_NAME: &str = "deckhand-ca";

#[cfg(test)]
mod tests;
