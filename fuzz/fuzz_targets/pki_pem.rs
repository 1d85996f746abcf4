//! deckhand-pki's readers must return `Ok` or `Err` for every text, never
//! panic: `CertInfo::from_pem`, `key_matches`, `verify_issued_by`,
//! `Ca::from_pem`, and `Ca::sign_node_csr`, which must never sign a request
//! for anything but the expected node.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::OnceLock;

use deckhand_pki::{Ca, CertInfo, key_matches, verify_issued_by};
use libfuzzer_sys::fuzz_target;

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| Ca::create("fuzz-ca", 30).expect("a CA"))
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ca = ca();
    if let Ok(info) = CertInfo::from_pem(text) {
        let _ = info.seconds_left(0);
        let _ = info.not_after_utc();
    }
    let _ = verify_issued_by(ca.cert_pem(), text);
    let _ = verify_issued_by(text, ca.cert_pem());
    let _ = key_matches(ca.cert_pem(), text);
    let _ = key_matches(text, text);
    let _ = Ca::from_pem(text, text);
    let address = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 4));
    if let Ok(cert) = ca.sign_node_csr(text, "node4", address, 1) {
        let info = CertInfo::from_pem(&cert).expect("a signed certificate parses");
        assert_eq!(info.common_name.as_deref(), Some("node:node4"));
        assert!(!info.is_ca);
        assert_eq!(info.ip_sans[0], address);
        verify_issued_by(ca.cert_pem(), &cert).expect("signed by the CA");
    }
});
