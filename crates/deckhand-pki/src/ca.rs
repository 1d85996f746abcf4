//! The cluster CA: making, loading and writing it, and issuing node, proxy
//! and operator certificates and certificates for CSRs.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PKCS_ECDSA_P256_SHA256, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use crate::info::{info_of, parse_cert, parse_pem};
use crate::names::{check_node_address, check_node_name, check_operator_name, node_common_name};
use crate::{
    BACKDATE_SECONDS, CA_CERT_FILE, CA_KEY_FILE, CERT_MODE, CertInfo, Error, KEY_MODE, MAX_DAYS,
    Result, write_new_file,
};

/// A certificate and its private key, both PEM (the key PKCS#8).
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate, PEM.
    pub cert_pem: String,
    /// Its private key, PKCS#8 PEM. Write it with mode 0600
    /// ([`crate::KEY_MODE`]).
    pub key_pem: String,
}

impl fmt::Debug for Issued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// The cluster CA: its certificate and private key.
pub struct Ca {
    cert_pem: String,
    key: KeyPair,
    info: CertInfo,
}

impl fmt::Debug for Ca {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ca")
            .field("info", &self.info)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn check_days(days: u32) -> Result<()> {
    if days == 0 || days > MAX_DAYS {
        return Err(Error::InvalidDays { days });
    }
    Ok(())
}

fn now_unix() -> u64 {
    OffsetDateTime::now_utc().unix_timestamp().max(0) as u64
}

fn new_key() -> Result<KeyPair> {
    KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| Error::generate("key", e))
}

/// 128 random bits, positive (top bit clear) and with a non-zero first byte,
/// so the encoded serial is always 16 bytes.
fn random_serial() -> Result<SerialNumber> {
    let mut b = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b)
        .map_err(|_| Error::generate("serial number", "no randomness"))?;
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(SerialNumber::from_slice(&b))
}

/// Parameters common to every certificate: the validity (backdated by
/// [`BACKDATE_SECONDS`], `days` long, never past `limit`) and a random serial.
fn base_params(days: u32, limit: Option<OffsetDateTime>) -> Result<CertificateParams> {
    check_days(days)?;
    let now = OffsetDateTime::now_utc();
    let mut p = CertificateParams::default();
    p.not_before = now - Duration::seconds(BACKDATE_SECONDS);
    p.not_after = now + Duration::days(i64::from(days));
    if let Some(limit) = limit {
        p.not_after = p.not_after.min(limit);
    }
    p.serial_number = Some(random_serial()?);
    p.distinguished_name = DistinguishedName::new();
    Ok(p)
}

fn node_sans(name: &str, address: IpAddr) -> Result<Vec<SanType>> {
    let mut ips = vec![address];
    for ip in [
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(Ipv6Addr::LOCALHOST),
    ] {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    let mut sans: Vec<SanType> = ips.into_iter().map(SanType::IpAddress).collect();
    for dns in ["localhost", name] {
        let d = SanType::DnsName(
            dns.try_into()
                .map_err(|e| Error::generate("certificate", e))?,
        );
        if !sans.contains(&d) {
            sans.push(d);
        }
    }
    Ok(sans)
}

fn sign(params: &CertificateParams, public: &impl rcgen::PublicKeyData, ca: &Ca) -> Result<String> {
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, &ca.key)
        .map_err(|e| Error::generate("certificate", e))?;
    params
        .signed_by(public, &issuer)
        .map(|c| c.pem())
        .map_err(|e| Error::generate("certificate", e))
}

impl Ca {
    /// Makes a new CA: a fresh ECDSA P-256 key and a self-signed certificate
    /// with CN `common_name`, basicConstraints CA:TRUE with path length 0
    /// (it signs leaves only), key usage keyCertSign, cRLSign and
    /// digitalSignature, valid `days` days from now (backdated by
    /// [`BACKDATE_SECONDS`]). Nothing is written; see [`Ca::write`].
    ///
    /// # Errors
    /// [`Error::InvalidDays`] outside 1..=[`MAX_DAYS`]; [`Error::Generate`]
    /// when no key or certificate can be made.
    pub fn create(common_name: &str, days: u32) -> Result<Ca> {
        if common_name.is_empty() {
            return Err(Error::InvalidName {
                kind: "CA",
                name: String::new(),
                reason: "empty",
            });
        }
        let key = new_key()?;
        let mut p = base_params(days, None)?;
        p.distinguished_name
            .push(DnType::CommonName, DnValue::Utf8String(common_name.into()));
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p
            .self_signed(&key)
            .map_err(|e| Error::generate("CA certificate", e))?;
        let cert_pem = cert.pem();
        let info = CertInfo::from_pem(&cert_pem)?;
        Ok(Ca {
            cert_pem,
            key,
            info,
        })
    }

    /// Builds a CA from its certificate and key PEM, checking that the
    /// certificate is a CA and the key is its key (an expired CA loads;
    /// issuing from it is refused).
    ///
    /// # Errors
    /// [`Error::BadPem`], [`Error::NotCa`], [`Error::WrongKeyType`],
    /// [`Error::KeyMismatch`] (named "CA certificate" / "CA key").
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca> {
        let pem = parse_pem(cert_pem, "CA certificate")?;
        let cert = parse_cert(&pem, "CA certificate")?;
        if !cert.is_ca() {
            return Err(Error::NotCa {
                what: "CA certificate".into(),
            });
        }
        let info = info_of(&cert, &pem.contents);
        let key = KeyPair::from_pem(key_pem).map_err(|e| Error::BadPem {
            what: "CA key".into(),
            expected: "PEM private key",
            reason: e.to_string(),
        })?;
        if key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
            return Err(Error::WrongKeyType {
                what: "CA key".into(),
            });
        }
        if cert.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(Error::KeyMismatch {
                cert: "CA certificate".into(),
                key: "CA key".into(),
            });
        }
        Ok(Ca {
            cert_pem: cert_pem.to_owned(),
            key,
            info,
        })
    }

    /// Reads `DIR/ca.crt` and `DIR/ca.key` (see [`Ca::from_pem`]).
    ///
    /// # Errors
    /// [`Error::Io`] naming the file that cannot be read (no CA in `dir`);
    /// the errors of [`Ca::from_pem`], naming the files.
    pub fn load(dir: &Path) -> Result<Ca> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        let cert = std::fs::read_to_string(&cert_path).map_err(|e| Error::io(&cert_path, e))?;
        let key = std::fs::read_to_string(&key_path).map_err(|e| Error::io(&key_path, e))?;
        let (c, k) = (
            cert_path.display().to_string(),
            key_path.display().to_string(),
        );
        Ca::from_pem(&cert, &key).map_err(|e| match e {
            Error::KeyMismatch { .. } => Error::KeyMismatch { cert: c, key: k },
            Error::BadPem { ref what, .. } | Error::WrongKeyType { ref what }
                if what == "CA key" =>
            {
                e.naming(&k)
            }
            other => other.naming(&c),
        })
    }

    /// Writes `DIR/ca.key` (mode 0600) and `DIR/ca.crt` (0644), each
    /// atomically ([`write_new_file`]); makes `dir` (mode 0700) if missing.
    ///
    /// # Errors
    /// [`Error::Exists`] when either file exists (nothing is written over);
    /// [`Error::Io`].
    pub fn write(&self, dir: &Path) -> Result<()> {
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| Error::io(dir, e))?;
        }
        for f in [CA_KEY_FILE, CA_CERT_FILE] {
            let p = dir.join(f);
            if p.symlink_metadata().is_ok() {
                return Err(Error::Exists { path: p });
            }
        }
        write_new_file(
            &dir.join(CA_KEY_FILE),
            self.key.serialize_pem().as_bytes(),
            KEY_MODE,
        )?;
        write_new_file(&dir.join(CA_CERT_FILE), self.cert_pem.as_bytes(), CERT_MODE)
    }

    /// The CA certificate, PEM: the trust anchor every node and client gets
    /// (etcd's `--trusted-ca-file`, `--peer-trusted-ca-file`, etcdctl's
    /// `--cacert`).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// What the CA certificate says.
    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    fn usable(&self) -> Result<OffsetDateTime> {
        let now = now_unix();
        if !self.info.is_valid_at(now) {
            return Err(Error::NotValidNow {
                what: "CA certificate".into(),
                not_before: self.info.not_before_unix,
                not_after: self.info.not_after_unix,
                now,
            });
        }
        OffsetDateTime::from_unix_timestamp(self.info.not_after_unix as i64)
            .map_err(|e| Error::generate("certificate", e))
    }

    fn leaf_params(&self, days: u32) -> Result<CertificateParams> {
        let limit = self.usable()?;
        let mut p = base_params(days, Some(limit))?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.use_authority_key_identifier_extension = true;
        Ok(p)
    }

    fn node_params(&self, name: &str, address: IpAddr, days: u32) -> Result<CertificateParams> {
        check_node_name(name)?;
        check_node_address(address)?;
        let mut p = self.leaf_params(days)?;
        p.distinguished_name.push(
            DnType::CommonName,
            DnValue::Utf8String(node_common_name(name)),
        );
        p.subject_alt_names = node_sans(name, address)?;
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        Ok(p)
    }

    /// A node's certificate, with a fresh key: server and client (EKU
    /// serverAuth, clientAuth; an etcd member presents its server
    /// certificate as a client to its peers), CN `node:<name>` (the node's
    /// etcd user once auth is on), SANs IP `address`, IP 127.0.0.1, IP ::1,
    /// DNS `localhost` and DNS `name`. For etcd's `--cert-file`/`--key-file`
    /// and `--peer-cert-file`/`--peer-key-file`, and the agent's client
    /// identity. Valid `days` days, never past the CA's own end.
    ///
    /// # Errors
    /// [`Error::InvalidName`] ([`check_node_name`]), [`Error::InvalidDays`],
    /// [`Error::NotValidNow`] when the CA expired, [`Error::Generate`].
    pub fn issue_node(&self, name: &str, address: IpAddr, days: u32) -> Result<Issued> {
        let p = self.node_params(name, address, days)?;
        self.issue(&p)
    }

    /// A node's grpc-proxy certificate, with a fresh key: the proxy's client
    /// identity towards the members (`etcd grpc-proxy --cert/--key`). Its
    /// subject is empty (no CN): etcd's grpc-proxy refuses a client
    /// certificate with a CN, which etcd would take as the user of every
    /// request the proxy forwards. etcd 3.4.23 prints `cert has non empty
    /// Common Name (<cn>)` and exits 1 (`TLSInfo.ClientConfig` with
    /// `EmptyCN`, <https://github.com/etcd-io/etcd/blob/v3.4.23/pkg/transport/listener.go>,
    /// set by `etcdmain/grpc_proxy.go`; tested in `tests/etcd_tls.rs`).
    /// EKU clientAuth and serverAuth, SAN IP `address`. `name` is only
    /// checked ([`check_node_name`]), not written.
    ///
    /// # Errors
    /// As [`Ca::issue_node`].
    pub fn issue_proxy(&self, name: &str, address: IpAddr, days: u32) -> Result<Issued> {
        check_node_name(name)?;
        check_node_address(address)?;
        let mut p = self.leaf_params(days)?;
        p.subject_alt_names = vec![SanType::IpAddress(address)];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        self.issue(&p)
    }

    /// An operator's client certificate, with a fresh key: CN `name`
    /// verbatim, the etcd user the operator acts as once auth is on (`root`
    /// for full rights), EKU clientAuth, no SANs.
    ///
    /// # Errors
    /// [`Error::InvalidName`] ([`check_operator_name`]), otherwise as
    /// [`Ca::issue_node`].
    pub fn issue_operator(&self, name: &str, days: u32) -> Result<Issued> {
        check_operator_name(name)?;
        let mut p = self.leaf_params(days)?;
        p.distinguished_name
            .push(DnType::CommonName, DnValue::Utf8String(name.into()));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(&p)
    }

    fn issue(&self, p: &CertificateParams) -> Result<Issued> {
        let key = new_key()?;
        let cert_pem = sign(p, &key, self)?;
        Ok(Issued {
            cert_pem,
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a node's CSR (from [`generate_csr`] on that node) into a node
    /// certificate, after checking that the request asks for exactly the
    /// node `expect_name` at `expect_address`: its signature verifies, its
    /// key is ECDSA P-256, its subject is exactly CN `node:<expect_name>`,
    /// its SANs are exactly the node SANs (as [`Ca::issue_node`], any
    /// order). The certificate's subject, SANs, key usages and validity are
    /// set here from the expected values, as [`Ca::issue_node`] does; no
    /// extension is copied from the request. Returns the certificate PEM.
    ///
    /// # Errors
    /// [`Error::CsrRefused`] saying what differs; [`Error::BadPem`] for a
    /// request that does not parse; otherwise as [`Ca::issue_node`].
    pub fn sign_node_csr(
        &self,
        csr_pem: &str,
        expect_name: &str,
        expect_address: IpAddr,
        days: u32,
    ) -> Result<String> {
        check_node_name(expect_name)?;
        check_node_address(expect_address)?;
        let csr = parse_csr(csr_pem)?;
        let want_cn = node_common_name(expect_name);
        let subject: Vec<(String, String)> = csr
            .params
            .distinguished_name
            .iter()
            .map(|(t, v)| (format!("{t:?}"), dn_value_text(v)))
            .collect();
        let cn_ok = matches!(
            csr.params.distinguished_name.iter().collect::<Vec<_>>().as_slice(),
            [(DnType::CommonName, v)] if dn_value_text(v) == want_cn
        );
        if !cn_ok {
            return Err(Error::CsrRefused {
                reason: format!("its subject is {subject:?}, expected exactly CN {want_cn:?}"),
            });
        }
        let want: BTreeSet<String> = node_sans(expect_name, expect_address)?
            .iter()
            .map(san_text)
            .collect();
        let got_list: Vec<String> = csr.params.subject_alt_names.iter().map(san_text).collect();
        let got: BTreeSet<String> = got_list.iter().cloned().collect();
        if got != want || got_list.len() != want.len() {
            return Err(Error::CsrRefused {
                reason: format!("its SANs are {got_list:?}, expected {want:?}"),
            });
        }
        let p = self.node_params(expect_name, expect_address, days)?;
        sign(&p, &csr.public_key, self)
    }

    /// Signs a node's grpc-proxy CSR (from [`generate_proxy_csr`] on that
    /// node) into a proxy certificate, as [`Ca::issue_proxy`] makes it, after
    /// checking that the request's signature verifies, its key is ECDSA
    /// P-256, its subject is empty and its SANs are exactly IP
    /// `expect_address`. Returns the certificate PEM.
    ///
    /// # Errors
    /// [`Error::CsrRefused`] saying what differs; [`Error::BadPem`];
    /// otherwise as [`Ca::issue_proxy`].
    pub fn sign_proxy_csr(
        &self,
        csr_pem: &str,
        name: &str,
        expect_address: IpAddr,
        days: u32,
    ) -> Result<String> {
        check_node_name(name)?;
        check_node_address(expect_address)?;
        let csr = parse_csr(csr_pem)?;
        if csr.params.distinguished_name.iter().next().is_some() {
            let subject: Vec<String> = csr
                .params
                .distinguished_name
                .iter()
                .map(|(t, v)| format!("{t:?}={}", dn_value_text(v)))
                .collect();
            return Err(Error::CsrRefused {
                reason: format!(
                    "the proxy request's subject is {subject:?}, expected an empty subject (etcd's grpc-proxy refuses a CN)"
                ),
            });
        }
        let got: Vec<String> = csr.params.subject_alt_names.iter().map(san_text).collect();
        let want = vec![san_text(&SanType::IpAddress(expect_address))];
        if got != want {
            return Err(Error::CsrRefused {
                reason: format!("the proxy request's SANs are {got:?}, expected {want:?}"),
            });
        }
        let mut p = self.leaf_params(days)?;
        p.subject_alt_names = vec![SanType::IpAddress(expect_address)];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ClientAuth,
            ExtendedKeyUsagePurpose::ServerAuth,
        ];
        sign(&p, &csr.public_key, self)
    }
}

/// A CSR that parses, whose signature verifies and whose key is ECDSA P-256.
pub(crate) fn parse_csr(csr_pem: &str) -> Result<CertificateSigningRequestParams> {
    let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| match e {
        rcgen::Error::InvalidCertificationRequestSignature => Error::CsrRefused {
            reason: "its signature does not verify".into(),
        },
        rcgen::Error::UnsupportedExtension => Error::CsrRefused {
            reason: "it asks for an extension other than SANs, key usage, extended key usage or basic constraints".into(),
        },
        e => Error::BadPem {
            what: "certificate request".into(),
            expected: "PEM CSR",
            reason: e.to_string(),
        },
    })?;
    if csr.public_key.algorithm() != &PKCS_ECDSA_P256_SHA256 {
        return Err(Error::CsrRefused {
            reason: "its key is not ECDSA P-256".into(),
        });
    }
    Ok(csr)
}

fn dn_value_text(v: &DnValue) -> String {
    match v {
        DnValue::Utf8String(s) => s.clone(),
        DnValue::PrintableString(s) => s.as_str().to_owned(),
        DnValue::Ia5String(s) => s.as_str().to_owned(),
        other => format!("{other:?}"),
    }
}

fn san_text(s: &SanType) -> String {
    match s {
        SanType::IpAddress(ip) => format!("IP:{ip}"),
        SanType::DnsName(d) => format!("DNS:{}", d.as_str()),
        other => format!("{other:?}"),
    }
}

/// Makes a node's key on the node and a CSR for its node certificate
/// (subject CN `node:<name>`, the node SANs of [`Ca::issue_node`]), for the
/// join flow: the key never leaves the node; the CA signs the CSR with
/// [`Ca::sign_node_csr`]. Returns `(key_pem, csr_pem)`.
///
/// # Errors
/// [`Error::InvalidName`], [`Error::Generate`].
pub fn generate_csr(name: &str, address: IpAddr) -> Result<(String, String)> {
    check_node_name(name)?;
    check_node_address(address)?;
    let key = new_key()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(
        DnType::CommonName,
        DnValue::Utf8String(node_common_name(name)),
    );
    p.subject_alt_names = node_sans(name, address)?;
    let csr = p
        .serialize_request(&key)
        .map_err(|e| Error::generate("CSR", e))?;
    let csr_pem = csr.pem().map_err(|e| Error::generate("CSR", e))?;
    Ok((key.serialize_pem(), csr_pem))
}

/// Makes a node's grpc-proxy key on the node and a CSR for its proxy
/// certificate (an empty subject, SAN IP `address`), for the join flow
/// beside [`generate_csr`]; the CA signs it with [`Ca::sign_proxy_csr`].
/// Returns `(key_pem, csr_pem)`.
///
/// # Errors
/// [`Error::Generate`].
pub fn generate_proxy_csr(address: IpAddr) -> Result<(String, String)> {
    check_node_address(address)?;
    let key = new_key()?;
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.subject_alt_names = vec![SanType::IpAddress(address)];
    let csr = p
        .serialize_request(&key)
        .map_err(|e| Error::generate("CSR", e))?;
    let csr_pem = csr.pem().map_err(|e| Error::generate("CSR", e))?;
    Ok((key.serialize_pem(), csr_pem))
}
