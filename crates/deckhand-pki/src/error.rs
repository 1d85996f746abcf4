//! The crate's error type: each variant says which file or field is wrong.

use std::path::PathBuf;

/// A result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong. `what` fields name the input: a file path, or a role
/// such as "CA certificate" when the PEM came from memory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is not the PEM (or DER inside it) that was expected.
    #[error("{what}: not a valid {expected}: {reason}")]
    BadPem {
        /// The input (file path or role).
        what: String,
        /// What it should hold ("PEM certificate", "PEM private key", "PEM CSR").
        expected: &'static str,
        /// The parser's words.
        reason: String,
    },
    /// A certificate used as a CA is not one (no basicConstraints CA:TRUE).
    #[error("{what}: not a CA certificate (basicConstraints CA is not true)")]
    NotCa {
        /// The input.
        what: String,
    },
    /// A certificate is past its `notAfter` (or before its `notBefore`).
    #[error(
        "{what}: not valid now: valid from {not_before} to {not_after} (unix seconds), now is {now}"
    )]
    NotValidNow {
        /// The input.
        what: String,
        /// Its notBefore, unix seconds.
        not_before: u64,
        /// Its notAfter, unix seconds.
        not_after: u64,
        /// The moment of the check, unix seconds.
        now: u64,
    },
    /// A private key is not the key of the certificate beside it.
    #[error("{key}: this private key does not match the certificate {cert}")]
    KeyMismatch {
        /// The certificate.
        cert: String,
        /// The key.
        key: String,
    },
    /// A key is not ECDSA P-256.
    #[error("{what}: the key is not ECDSA P-256 (deckhand's only key type)")]
    WrongKeyType {
        /// The input.
        what: String,
    },
    /// A file that would be written exists already (nothing was written over).
    #[error("{path}: exists already; not overwritten", path = .path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {source}", path = .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node or operator name that cannot be used.
    #[error("invalid {kind} name {name:?}: {reason}")]
    InvalidName {
        /// "node" or "operator".
        kind: &'static str,
        /// The name given.
        name: String,
        /// Why not.
        reason: &'static str,
    },
    /// A node address no peer or client could dial: unspecified
    /// (`0.0.0.0`, `::`), multicast or broadcast.
    #[error(
        "invalid node address {address}: {reason}; give the address the node advertises to its peers"
    )]
    InvalidAddress {
        /// The address given.
        address: std::net::IpAddr,
        /// Why not.
        reason: &'static str,
    },
    /// A lifetime outside 1..=[`crate::MAX_DAYS`].
    #[error("invalid lifetime of {days} days: give 1 to {max}", max = crate::MAX_DAYS)]
    InvalidDays {
        /// The days given.
        days: u32,
    },
    /// A CSR was refused: its subject, SANs or key are not what was expected.
    #[error("certificate request refused: {reason}")]
    CsrRefused {
        /// What differs.
        reason: String,
    },
    /// A certificate was not signed by the given CA.
    #[error("{what}: not issued by this CA: {reason}")]
    NotIssuedBy {
        /// The certificate.
        what: String,
        /// The issuer name or signature check that failed.
        reason: String,
    },
    /// Making a key, certificate or CSR failed (rcgen or ring).
    #[error("cannot make the {what}: {reason}")]
    Generate {
        /// "key", "certificate", "CSR".
        what: &'static str,
        /// The library's words.
        reason: String,
    },
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn generate(what: &'static str, e: impl std::fmt::Display) -> Error {
        Error::Generate {
            what,
            reason: e.to_string(),
        }
    }

    /// The same error with its `what` (input name) replaced, for errors of
    /// PEM that turned out to come from a file.
    pub(crate) fn naming(self, name: &str) -> Error {
        match self {
            Error::BadPem {
                expected, reason, ..
            } => Error::BadPem {
                what: name.into(),
                expected,
                reason,
            },
            Error::NotCa { .. } => Error::NotCa { what: name.into() },
            Error::NotValidNow {
                not_before,
                not_after,
                now,
                ..
            } => Error::NotValidNow {
                what: name.into(),
                not_before,
                not_after,
                now,
            },
            Error::WrongKeyType { .. } => Error::WrongKeyType { what: name.into() },
            other => other,
        }
    }
}
