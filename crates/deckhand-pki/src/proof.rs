//! Proof of possession for the join flow: a node signs a challenge with the
//! key of its CSR (and, when it renews, with the key of its current
//! certificate), and the signer checks the signature against the public
//! key in the CSR (or the certificate). ECDSA P-256 with SHA-256, ASN.1
//! DER signatures (ring, through rcgen's key pair).

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PublicKeyData};
use ring::signature::{ECDSA_P256_SHA256_ASN1, UnparsedPublicKey};

use crate::info::{parse_cert, parse_pem};
use crate::{Error, Result};

/// Signs `msg` with the private key `key_pem` (PKCS#8 PEM, ECDSA P-256).
///
/// # Errors
/// [`Error::BadPem`] for a key that does not parse, [`Error::WrongKeyType`]
/// for a key that is not ECDSA P-256, [`Error::Generate`] when signing fails.
pub fn sign_message(key_pem: &str, msg: &[u8]) -> Result<Vec<u8>> {
    let key = KeyPair::from_pem(key_pem).map_err(|e| Error::BadPem {
        what: "private key".into(),
        expected: "PEM private key",
        reason: e.to_string(),
    })?;
    if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(Error::WrongKeyType {
            what: "private key".into(),
        });
    }
    rcgen::SigningKey::sign(&key, msg).map_err(|e| Error::generate("signature", e))
}

/// The public key (uncompressed P-256 point) of a CSR whose own signature
/// verifies.
///
/// # Errors
/// [`Error::BadPem`] when it does not parse, [`Error::CsrRefused`] when its
/// signature does not verify, it asks for an extension the CA never signs,
/// or its key is not ECDSA P-256 (the checks of every CSR the CA signs).
pub fn csr_public_key(csr_pem: &str) -> Result<Vec<u8>> {
    let csr = crate::ca::parse_csr(csr_pem)?;
    Ok(csr.public_key.der_bytes().to_vec())
}

/// The public key (the subjectPublicKey bits) of a certificate.
///
/// # Errors
/// [`Error::BadPem`].
pub fn cert_public_key(cert_pem: &str) -> Result<Vec<u8>> {
    let p = parse_pem(cert_pem, "certificate")?;
    let cert = parse_cert(&p, "certificate")?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

/// Whether `sig` is an ECDSA P-256 SHA-256 signature of `msg` by the
/// public key `public_key` (an uncompressed point, as
/// [`csr_public_key`] and [`cert_public_key`] return).
pub fn verify_message(public_key: &[u8], msg: &[u8], sig: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, public_key)
        .verify(msg, sig)
        .is_ok()
}

/// 32 random bytes (ring's system random), for a challenge's nonce.
///
/// # Errors
/// [`Error::Generate`] when the system has no randomness to give.
pub fn random_nonce() -> Result<[u8; 32]> {
    let mut b = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| Error::generate("nonce", "no randomness"))?;
    Ok(b)
}

/// SHA-256 of `data`, lowercase hex: how a request's CSR is named in the
/// answers to it.
pub fn sha256_hex(data: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_with_its_own_key_only() {
        let addr = "10.0.0.5".parse().unwrap();
        let (key, csr) = crate::generate_csr("n5", addr).unwrap();
        let (other_key, _) = crate::generate_csr("n6", addr).unwrap();
        let public = csr_public_key(&csr).unwrap();
        let sig = sign_message(&key, b"nonce-1").unwrap();
        assert!(verify_message(&public, b"nonce-1", &sig));
        assert!(
            !verify_message(&public, b"nonce-2", &sig),
            "another message"
        );
        let forged = sign_message(&other_key, b"nonce-1").unwrap();
        assert!(!verify_message(&public, b"nonce-1", &forged), "another key");
        assert!(!verify_message(&public, b"nonce-1", b"junk"));
        // A certificate's key: the node's current one when it renews.
        let ca = crate::Ca::create("ca", 30).unwrap();
        let issued = ca.issue_node("n5", addr, 30).unwrap();
        let cert_key = cert_public_key(&issued.cert_pem).unwrap();
        let sig = sign_message(&issued.key_pem, b"m").unwrap();
        assert!(verify_message(&cert_key, b"m", &sig));
        assert!(!verify_message(&public, b"m", &sig));
        assert!(csr_public_key("junk").is_err());
    }
}
