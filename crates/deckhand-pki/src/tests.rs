//! Tests of the certificates as etcd and Go's crypto/tls will see them.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;

use x509_parser::prelude::*;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Parses a PEM certificate and hands it to `f`.
fn with_cert<T>(pem: &str, f: impl FnOnce(&X509Certificate<'_>) -> T) -> T {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    let c = p.parse_x509().unwrap();
    f(&c)
}

#[test]
fn the_ca_is_a_p256_ca_that_signs_leaves_only() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let info = CertInfo::from_pem(ca.cert_pem()).unwrap();
    assert!(info.is_ca);
    assert_eq!(info.common_name.as_deref(), Some("deckhand-ca"));
    let days = (info.not_after_unix - info.not_before_unix) as i64;
    assert_eq!(days - BACKDATE_SECONDS, i64::from(CA_DAYS) * 86_400);
    with_cert(ca.cert_pem(), |c| {
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert!(bc.ca);
        assert_eq!(bc.path_len_constraint, Some(0));
        let ku = c.key_usage().unwrap().unwrap().value;
        assert!(ku.key_cert_sign() && ku.crl_sign());
        assert_eq!(
            c.signature_algorithm.algorithm,
            x509_parser::oid_registry::OID_SIG_ECDSA_WITH_SHA256
        );
        assert_eq!(
            c.public_key().algorithm.algorithm,
            x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
        );
        // Self-signed.
        c.verify_signature(None).unwrap();
    });
    verify_issued_by(ca.cert_pem(), ca.cert_pem()).unwrap();
}

#[test]
fn a_node_certificate_is_server_and_client_with_the_sans_etcd_checks() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let n = ca.issue_node("node1", ip("10.0.0.7"), LEAF_DAYS).unwrap();
    let info = CertInfo::from_pem(&n.cert_pem).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("node:node1"));
    assert_eq!(info.issuer_common_name.as_deref(), Some("deckhand-ca"));
    assert!(info.server_auth && info.client_auth);
    assert!(!info.is_ca);
    assert_eq!(
        info.ip_sans,
        vec![ip("10.0.0.7"), ip("127.0.0.1"), ip("::1")]
    );
    assert_eq!(info.dns_sans, vec!["localhost", "node1"]);
    let life = info.not_after_unix - info.not_before_unix;
    assert_eq!(
        life as i64 - BACKDATE_SECONDS,
        i64::from(LEAF_DAYS) * 86_400
    );
    // Backdated for clock skew: valid a few minutes ago already.
    assert!(info.not_before_unix <= now() - 4 * 60);
    with_cert(&n.cert_pem, |c| {
        let bc = c.basic_constraints().unwrap().unwrap().value;
        assert!(!bc.ca);
        assert!(c.key_usage().unwrap().unwrap().value.digital_signature());
        assert!(
            c.extensions().iter().any(|e| matches!(
                e.parsed_extension(),
                ParsedExtension::AuthorityKeyIdentifier(_)
            )),
            "no authority key identifier"
        );
    });
    verify_issued_by(ca.cert_pem(), &n.cert_pem).unwrap();
    assert!(key_matches(&n.cert_pem, &n.key_pem).unwrap());
    // An address of loopback itself is not listed twice.
    let l = ca.issue_node("n2", ip("127.0.0.1"), 1).unwrap();
    let li = CertInfo::from_pem(&l.cert_pem).unwrap();
    assert_eq!(li.ip_sans, vec![ip("127.0.0.1"), ip("::1")]);
    // IPv6 addresses work.
    let v6 = ca.issue_node("n3", ip("fd00::3"), 1).unwrap();
    assert_eq!(
        CertInfo::from_pem(&v6.cert_pem).unwrap().ip_sans[0],
        ip("fd00::3")
    );
}

#[test]
fn a_proxy_certificate_has_an_empty_subject_and_a_client_eku() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let p = ca.issue_proxy("node1", ip("10.0.0.7"), LEAF_DAYS).unwrap();
    let info = CertInfo::from_pem(&p.cert_pem).unwrap();
    assert_eq!(info.common_name, None);
    assert!(info.client_auth);
    assert_eq!(info.ip_sans, vec![ip("10.0.0.7")]);
    assert!(info.dns_sans.is_empty());
    with_cert(&p.cert_pem, |c| assert_eq!(c.subject().iter().count(), 0));
    verify_issued_by(ca.cert_pem(), &p.cert_pem).unwrap();
    assert!(key_matches(&p.cert_pem, &p.key_pem).unwrap());
    assert!(matches!(
        ca.issue_proxy("bad name", ip("10.0.0.7"), 1),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn an_operator_certificate_carries_the_user_name_verbatim_and_is_client_only() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let o = ca.issue_operator("root", LEAF_DAYS).unwrap();
    let info = CertInfo::from_pem(&o.cert_pem).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("root"));
    assert!(info.client_auth && !info.server_auth);
    assert!(info.ip_sans.is_empty() && info.dns_sans.is_empty());
    verify_issued_by(ca.cert_pem(), &o.cert_pem).unwrap();
    assert!(matches!(
        ca.issue_operator("../etc", 1),
        Err(Error::InvalidName { .. })
    ));
}

#[test]
fn a_certificate_from_another_ca_does_not_verify_even_under_the_same_name() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let twin = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let other = Ca::create("other-ca", CA_DAYS).unwrap();
    let n = twin.issue_node("node1", ip("10.0.0.7"), 1).unwrap();
    let e = verify_issued_by(ca.cert_pem(), &n.cert_pem).unwrap_err();
    assert!(matches!(e, Error::NotIssuedBy { .. }), "{e}");
    assert!(e.to_string().contains("signature"), "{e}");
    let m = other.issue_node("node1", ip("10.0.0.7"), 1).unwrap();
    let e = verify_issued_by(ca.cert_pem(), &m.cert_pem).unwrap_err();
    assert!(e.to_string().contains("issuer"), "{e}");
    // A leaf is no CA to verify against.
    let own = ca.issue_node("node1", ip("10.0.0.7"), 1).unwrap();
    let e = verify_issued_by(&own.cert_pem, &n.cert_pem).unwrap_err();
    assert!(matches!(e, Error::NotCa { .. }), "{e}");
}

#[test]
fn a_key_of_another_certificate_is_detected() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let a = ca.issue_node("a", ip("10.0.0.1"), 1).unwrap();
    let b = ca.issue_node("b", ip("10.0.0.2"), 1).unwrap();
    assert!(key_matches(&a.cert_pem, &a.key_pem).unwrap());
    assert!(!key_matches(&a.cert_pem, &b.key_pem).unwrap());
    // A CA with the wrong key is refused, naming the files.
    let e = Ca::from_pem(ca.cert_pem(), &a.key_pem).unwrap_err();
    assert!(matches!(e, Error::KeyMismatch { .. }), "{e}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(CA_CERT_FILE), ca.cert_pem()).unwrap();
    std::fs::write(dir.path().join(CA_KEY_FILE), &b.key_pem).unwrap();
    let e = Ca::load(dir.path()).unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("ca.key") && msg.contains("does not match"),
        "{msg}"
    );
    // A leaf is not a CA.
    let e = Ca::from_pem(&a.cert_pem, &a.key_pem).unwrap_err();
    assert!(matches!(e, Error::NotCa { .. }), "{e}");
}

#[test]
fn bad_pem_is_an_error_that_names_the_input() {
    let e = CertInfo::from_pem("not a certificate").unwrap_err();
    assert!(matches!(e, Error::BadPem { .. }), "{e}");
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let o = ca.issue_operator("root", 1).unwrap();
    // A key where a certificate belongs.
    let e = CertInfo::from_pem(&o.key_pem).unwrap_err();
    assert!(e.to_string().contains("PRIVATE KEY"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.crt");
    std::fs::write(&f, "garbage").unwrap();
    let e = CertInfo::from_file(&f).unwrap_err();
    assert!(e.to_string().contains("x.crt"), "{e}");
    // DER (binary) where PEM belongs: said so, with the conversion.
    std::fs::write(&f, [0x30u8, 0x82, 0xff, 0xfe, 0x00]).unwrap();
    let e = CertInfo::from_file(&f).unwrap_err();
    assert!(matches!(e, Error::BadPem { .. }), "{e}");
    assert!(
        e.to_string().contains("binary") && e.to_string().contains("x.crt"),
        "{e}"
    );
    let e = key_matches(&o.cert_pem, "garbage").unwrap_err();
    assert!(matches!(e, Error::BadPem { .. }), "{e}");
    std::fs::write(dir.path().join(CA_CERT_FILE), "garbage").unwrap();
    std::fs::write(dir.path().join(CA_KEY_FILE), &o.key_pem).unwrap();
    let e = Ca::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("ca.crt"), "{e}");
    let empty = tempfile::tempdir().unwrap();
    let e = Ca::load(empty.path()).unwrap_err();
    assert!(
        matches!(e, Error::Io { .. }) && e.to_string().contains("ca.crt"),
        "{e}"
    );
}

#[test]
fn lifetimes_are_checked_and_leaves_never_outlive_the_ca() {
    assert!(matches!(
        Ca::create("c", 0),
        Err(Error::InvalidDays { days: 0 })
    ));
    assert!(matches!(
        Ca::create("c", MAX_DAYS + 1),
        Err(Error::InvalidDays { .. })
    ));
    let ca = Ca::create("c", 10).unwrap();
    assert!(matches!(
        ca.issue_node("n", ip("10.0.0.1"), 0),
        Err(Error::InvalidDays { .. })
    ));
    let n = ca.issue_node("n", ip("10.0.0.1"), 365).unwrap();
    let ni = CertInfo::from_pem(&n.cert_pem).unwrap();
    assert!(ni.not_after_unix <= ca.info().not_after_unix);
    assert!(ni.not_after_unix + 86_400 > ca.info().not_after_unix);
}

#[test]
fn an_expired_ca_loads_but_issues_nothing() {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.not_before = rcgen::date_time_ymd(2000, 1, 1);
    p.not_after = rcgen::date_time_ymd(2001, 1, 1);
    let cert = p.self_signed(&key).unwrap();
    let ca = Ca::from_pem(&cert.pem(), &key.serialize_pem()).unwrap();
    let e = ca.issue_node("n", ip("10.0.0.1"), 1).unwrap_err();
    assert!(matches!(e, Error::NotValidNow { .. }), "{e}");
    assert!(ca.info().seconds_left(now()) < 0);
}

#[test]
fn serials_are_random_and_sixteen_bytes() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let a = CertInfo::from_pem(&ca.issue_operator("root", 1).unwrap().cert_pem).unwrap();
    let b = CertInfo::from_pem(&ca.issue_operator("root", 1).unwrap().cert_pem).unwrap();
    assert_ne!(a.serial_hex, b.serial_hex);
    assert_eq!(a.serial_hex.len(), 32);
    assert_ne!(a.sha256_fingerprint, b.sha256_fingerprint);
    assert_eq!(a.sha256_fingerprint.len(), 64);
}

#[test]
fn the_ca_is_written_with_its_modes_and_never_over_an_existing_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    ca.write(&dir).unwrap();
    let mode = |f: &str| std::fs::metadata(dir.join(f)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(CA_KEY_FILE), 0o600);
    assert_eq!(mode(CA_CERT_FILE), 0o644);
    assert_eq!(
        std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let loaded = Ca::load(&dir).unwrap();
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    let before = std::fs::read(dir.join(CA_KEY_FILE)).unwrap();
    let second = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let e = second.write(&dir).unwrap_err();
    assert!(matches!(e, Error::Exists { .. }), "{e}");
    assert_eq!(std::fs::read(dir.join(CA_KEY_FILE)).unwrap(), before);
    assert_eq!(
        std::fs::read_to_string(dir.join(CA_CERT_FILE)).unwrap(),
        ca.cert_pem()
    );
    // Only a certificate left there is refused too, and nothing is written.
    let other = tmp.path().join("half");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join(CA_CERT_FILE), "x").unwrap();
    assert!(matches!(second.write(&other), Err(Error::Exists { .. })));
    assert!(!other.join(CA_KEY_FILE).exists());
    // The loaded CA issues certificates its original verifies.
    let n = loaded.issue_node("n", ip("10.0.0.1"), 1).unwrap();
    verify_issued_by(ca.cert_pem(), &n.cert_pem).unwrap();
}

#[test]
fn a_csr_for_the_expected_node_is_signed_with_the_expected_names_only() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let (key, csr) = generate_csr("node4", ip("10.0.0.4")).unwrap();
    let cert = ca.sign_node_csr(&csr, "node4", ip("10.0.0.4"), 30).unwrap();
    verify_issued_by(ca.cert_pem(), &cert).unwrap();
    assert!(key_matches(&cert, &key).unwrap());
    let info = CertInfo::from_pem(&cert).unwrap();
    assert_eq!(info.common_name.as_deref(), Some("node:node4"));
    assert!(info.server_auth && info.client_auth && !info.is_ca);
    assert_eq!(
        info.ip_sans,
        vec![ip("10.0.0.4"), ip("127.0.0.1"), ip("::1")]
    );
}

#[test]
fn a_csr_for_another_name_or_address_is_refused() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let (_, csr) = generate_csr("node4", ip("10.0.0.4")).unwrap();
    let e = ca
        .sign_node_csr(&csr, "node5", ip("10.0.0.4"), 30)
        .unwrap_err();
    assert!(
        matches!(e, Error::CsrRefused { .. }) && e.to_string().contains("node:node5"),
        "{e}"
    );
    let e = ca
        .sign_node_csr(&csr, "node4", ip("10.0.0.5"), 30)
        .unwrap_err();
    assert!(
        matches!(e, Error::CsrRefused { .. }) && e.to_string().contains("10.0.0.5"),
        "{e}"
    );
}

/// A CSR made by hand with rcgen from `params` (a P-256 key).
fn csr_of(params: rcgen::CertificateParams) -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn node4_params() -> rcgen::CertificateParams {
    let mut p = rcgen::CertificateParams::new(vec![
        "10.0.0.4".to_string(),
        "127.0.0.1".into(),
        "::1".into(),
        "localhost".into(),
        "node4".into(),
    ])
    .unwrap();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "node:node4");
    p
}

#[test]
fn a_csr_with_extra_names_or_another_subject_is_refused() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let sign = |csr: &str| ca.sign_node_csr(csr, "node4", ip("10.0.0.4"), 30);
    // The hand-made twin of generate_csr's request passes (so the refusals
    // below are for the difference alone).
    sign(&csr_of(node4_params())).unwrap();
    let mut extra = node4_params();
    extra.subject_alt_names.push(rcgen::SanType::DnsName(
        "etcd.example.org".try_into().unwrap(),
    ));
    let e = sign(&csr_of(extra)).unwrap_err();
    assert!(e.to_string().contains("etcd.example.org"), "{e}");
    let mut fewer = node4_params();
    fewer.subject_alt_names.pop();
    assert!(matches!(
        sign(&csr_of(fewer)),
        Err(Error::CsrRefused { .. })
    ));
    let mut dup = node4_params();
    dup.subject_alt_names
        .push(rcgen::SanType::IpAddress(ip("10.0.0.4")));
    assert!(matches!(sign(&csr_of(dup)), Err(Error::CsrRefused { .. })));
    let mut org = node4_params();
    org.distinguished_name
        .push(rcgen::DnType::OrganizationName, "system:masters");
    let e = sign(&csr_of(org)).unwrap_err();
    assert!(matches!(e, Error::CsrRefused { .. }), "{e}");
    let mut root = node4_params();
    root.distinguished_name = rcgen::DistinguishedName::new();
    root.distinguished_name
        .push(rcgen::DnType::CommonName, "root");
    assert!(matches!(sign(&csr_of(root)), Err(Error::CsrRefused { .. })));
    let mut nocn = node4_params();
    nocn.distinguished_name = rcgen::DistinguishedName::new();
    assert!(matches!(sign(&csr_of(nocn)), Err(Error::CsrRefused { .. })));
}

#[test]
fn a_csr_asking_to_be_a_ca_gets_a_leaf() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let mut p = node4_params();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let cert = ca
        .sign_node_csr(&csr_of(p), "node4", ip("10.0.0.4"), 30)
        .unwrap();
    let info = CertInfo::from_pem(&cert).unwrap();
    assert!(!info.is_ca);
    with_cert(&cert, |c| {
        assert!(!c.key_usage().unwrap().unwrap().value.key_cert_sign());
    });
}

#[test]
fn a_csr_with_a_broken_signature_or_another_key_type_is_refused() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let (_, csr) = generate_csr("node4", ip("10.0.0.4")).unwrap();
    // Flip one bit of the request's DER, inside the signed part.
    let der = ::pem::parse(&csr).unwrap();
    let mut bytes = der.contents().to_vec();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let bad = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", bytes));
    assert!(ca.sign_node_csr(&bad, "node4", ip("10.0.0.4"), 30).is_err());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let ed = node4_params()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap();
    let e = ca
        .sign_node_csr(&ed, "node4", ip("10.0.0.4"), 30)
        .unwrap_err();
    assert!(e.to_string().contains("P-256"), "{e}");
    assert!(matches!(
        ca.sign_node_csr("garbage", "node4", ip("10.0.0.4"), 30),
        Err(Error::BadPem { .. })
    ));
}

#[test]
fn times_print_as_rfc3339_utc() {
    assert_eq!(utc_rfc3339(0), "1970-01-01T00:00:00Z");
    assert_eq!(utc_rfc3339(1_796_206_516), "2026-12-02T10:15:16Z");
}

#[test]
fn a_proxy_csr_is_signed_with_an_empty_subject_and_its_address_only() {
    let ca = Ca::create("deckhand-ca", CA_DAYS).unwrap();
    let (key, csr) = generate_proxy_csr(ip("10.0.0.4")).unwrap();
    let cert = ca
        .sign_proxy_csr(&csr, "node4", ip("10.0.0.4"), 30)
        .unwrap();
    verify_issued_by(ca.cert_pem(), &cert).unwrap();
    assert!(key_matches(&cert, &key).unwrap());
    let info = CertInfo::from_pem(&cert).unwrap();
    assert_eq!(info.common_name, None, "etcd's grpc-proxy refuses a CN");
    assert_eq!(info.ip_sans, vec![ip("10.0.0.4")]);
    assert!(info.client_auth);
    // Another address, and a node request in the proxy's place.
    let e = ca
        .sign_proxy_csr(&csr, "node4", ip("10.0.0.5"), 30)
        .unwrap_err();
    assert!(e.to_string().contains("10.0.0.5"), "{e}");
    let (_, node_csr) = generate_csr("node4", ip("10.0.0.4")).unwrap();
    let e = ca
        .sign_proxy_csr(&node_csr, "node4", ip("10.0.0.4"), 30)
        .unwrap_err();
    assert!(e.to_string().contains("empty subject"), "{e}");
}

#[test]
fn node_addresses_nobody_can_dial_are_refused() {
    let ca = Ca::create("test-ca", 30).unwrap();
    for bad in ["0.0.0.0", "::", "224.0.0.1", "ff02::1", "255.255.255.255"] {
        let e = ca.issue_node("n1", ip(bad), 1).unwrap_err().to_string();
        assert!(e.contains(&format!("invalid node address {bad}")), "{e}");
        assert!(ca.issue_proxy("n1", ip(bad), 1).is_err(), "{bad}");
        assert!(generate_csr("n1", ip(bad)).is_err(), "{bad}");
    }
    ca.issue_node("n1", ip("10.0.0.1"), 1).unwrap();
    ca.issue_node("n1", ip("127.0.0.1"), 1).unwrap();
}
