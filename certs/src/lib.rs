//! Mints qchat's trust with rcgen: a CA of the user's own, the relay's certificate, one
//! `.qchat` identity per person, and a CRL for revoked ones.
//!
//! A PKI directory holds:
//! - `ca.pem`, `ca.key` — the CA (the key is 0600 and never leaves this directory);
//! - `relay.pem`, `relay.key` — the relay's certificate (serverAuth, every host a SAN);
//! - `crl.pem` — revoked user certificates, reloaded by a running relay;
//! - `users` — every name issued, in order: the relay's users;
//! - `issued/NAME.pem` — each user's certificate, kept to revoke it later;
//! - `revoked` — `NAME SERIAL` per revoked certificate (`NAME/DEVICE SERIAL` for a
//!   device's, which the relay signed from the device's own request);
//! - `NAME.qchat` — the identity files to hand out (0600).

use std::fs;
use std::path::{Path, PathBuf};

use qchat_shared::identity::{split_host_port, write_secret, Identity};
use qchat_shared::names::validate_user_name;
use qchat_shared::replace::{replace_file, Readers};
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateRevocationListParams, CertificateSigningRequestParams,
    DnType, ExtendedKeyUsagePurpose, IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use time::{Duration, OffsetDateTime};

/// How long the CA and the relay's certificate are valid.
const CA_YEARS: i64 = 20;
/// How long a user certificate is valid.
const USER_YEARS: i64 = 10;

/// What went wrong while minting.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    #[error("{0} already holds a PKI (ca.pem exists); refusing to overwrite it. Use another --dir, or remove it if you really mean to start over")]
    AlreadyExists(PathBuf),
    #[error("{0} holds no PKI (no ca.pem); create one with `qchat-certs init --dir {0}`")]
    NoPki(PathBuf),
    #[error("{0}")]
    BadName(String),
    #[error("{0}")]
    BadServer(String),
    #[error("at least one --host is needed: the name or IP address clients use to reach the relay")]
    NoHosts,
    #[error("user {0} already has an identity in this PKI")]
    UserExists(String),
    #[error("this PKI never issued an identity for {0}")]
    UnknownUser(String),
    #[error("user {0} is already revoked")]
    AlreadyRevoked(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("the certificate request is not valid: {0}")]
    BadRequest(String),
    #[error("{path} is not a certificate this helper can read: {detail}")]
    BadCertificate { path: PathBuf, detail: String },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CertsError + '_ {
    move |source| CertsError::Io { path: path.to_path_buf(), source }
}

fn read(path: &Path) -> Result<String, CertsError> {
    fs::read_to_string(path).map_err(io_err(path))
}

/// Writes a file others may read, atomically: a reader (the running relay reading
/// `users` or the CRL) sees the old content or the new, never a half-written file.
fn write_public(path: &Path, text: &str) -> Result<(), CertsError> {
    replace_file(path, text.as_bytes(), Readers::Anyone).map_err(io_err(path))
}

fn write_private(path: &Path, text: &str) -> Result<(), CertsError> {
    write_secret(path, text.as_bytes()).map_err(io_err(path))
}

/// Runs `change` holding the PKI's lock file (`.lock`), so that changes that read a list
/// and write it back (users, revocations and the CRL) never lose one another when the
/// relay (enrolling or revoking devices) and `qchat-certs` or `qchat-server` run at once.
fn locked<T>(dir: &Path, change: impl FnOnce() -> Result<T, CertsError>) -> Result<T, CertsError> {
    let path = dir.join(".lock");
    let file = fs::OpenOptions::new().create(true).write(true).truncate(false).open(&path).map_err(io_err(&path))?;
    file.lock().map_err(io_err(&path))?;
    let result = change();
    let _ = file.unlock();
    result
}

/// The files of a PKI directory.
#[derive(Debug, Clone)]
pub struct PkiDir {
    pub dir: PathBuf,
}

impl PkiDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PkiDir { dir: dir.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    pub fn relay_cert(&self) -> PathBuf {
        self.dir.join("relay.pem")
    }
    pub fn relay_key(&self) -> PathBuf {
        self.dir.join("relay.key")
    }
    pub fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    pub fn users_file(&self) -> PathBuf {
        self.dir.join("users")
    }
    pub fn revoked_file(&self) -> PathBuf {
        self.dir.join("revoked")
    }
    pub fn issued_cert(&self, name: &str) -> PathBuf {
        self.dir.join("issued").join(format!("{name}.pem"))
    }
    pub fn identity(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.qchat"))
    }
    /// The public end-to-end keys issued with `name`'s identity, which the relay serves
    /// until the device publishes its own ([`qchat_shared::identity::IssuedKeys`]).
    pub fn issued_keys(&self, name: &str) -> PathBuf {
        self.dir.join("issued").join(format!("{name}.e2e"))
    }
    /// Whether a CA exists here.
    pub fn exists(&self) -> bool {
        self.ca_cert().exists()
    }

    fn require(&self) -> Result<(), CertsError> {
        if self.exists() {
            Ok(())
        } else {
            Err(CertsError::NoPki(self.dir.clone()))
        }
    }

    /// Every user name issued, in order.
    pub fn users(&self) -> Result<Vec<String>, CertsError> {
        let path = self.users_file();
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(read(&path)?.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
    }

    /// Names revoked so far.
    pub fn revoked(&self) -> Result<Vec<(String, String)>, CertsError> {
        let path = self.revoked_file();
        if !path.exists() {
            return Ok(Vec::new());
        }
        Ok(read(&path)?
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect())
    }
}

/// The CA, loaded for signing.
struct Ca {
    cert: Certificate,
    key: KeyPair,
    pem: String,
}

impl Ca {
    fn load(pki: &PkiDir) -> Result<Self, CertsError> {
        pki.require()?;
        let pem = read(&pki.ca_cert())?;
        let key = KeyPair::from_pem(&read(&pki.ca_key())?)?;
        // Re-signing the parameters with the same key gives an issuer with the same name and
        // key, which is all that signing needs.
        let cert = CertificateParams::from_ca_cert_pem(&pem)?.self_signed(&key)?;
        Ok(Ca { cert, key, pem })
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and of full length, as RFC 5280 asks.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, years: i64) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(365 * years);
}

/// Creates a new PKI in `dir`: a CA, the relay's certificate for `hosts`, and an empty CRL.
pub fn init(dir: &Path, hosts: &[String]) -> Result<PkiDir, CertsError> {
    let pki = PkiDir::new(dir);
    if pki.exists() {
        return Err(CertsError::AlreadyExists(dir.to_path_buf()));
    }
    if hosts.is_empty() {
        return Err(CertsError::NoHosts);
    }
    fs::create_dir_all(dir.join("issued")).map_err(io_err(dir))?;
    // The CA's key lives here: nobody else needs to look inside.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }

    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    // A name of its own, so that certificates of two qchat PKIs are never mistaken for
    // each other's (a shared name would fail as a bad signature instead of "unknown CA").
    let tag: [u8; 4] = rand::random();
    ca_params.distinguished_name.push(DnType::CommonName, format!("qchat CA {}", qchat_shared::hex::encode(&tag)));
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca_params.serial_number = Some(random_serial());
    validity(&mut ca_params, CA_YEARS);
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let relay_key = KeyPair::generate()?;
    let mut relay_params = CertificateParams::new(hosts.to_vec())?;
    relay_params.distinguished_name.push(DnType::CommonName, "qchat relay");
    relay_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    relay_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    relay_params.serial_number = Some(random_serial());
    validity(&mut relay_params, CA_YEARS);
    let relay_cert = relay_params.signed_by(&relay_key, &ca_cert, &ca_key)?;

    write_private(&pki.ca_key(), &ca_key.serialize_pem())?;
    write_private(&pki.relay_key(), &relay_key.serialize_pem())?;
    write_public(&pki.relay_cert(), &relay_cert.pem())?;
    write_public(&pki.users_file(), "")?;
    let ca = Ca { pem: ca_cert.pem(), cert: ca_cert, key: ca_key };
    write_crl(&pki, &ca, &[])?;
    // ca.pem last: its presence marks a complete PKI.
    write_public(&pki.ca_cert(), &ca.pem)?;
    Ok(pki)
}

/// Options for a user certificate; the defaults are what `qchat-certs user` issues.
#[derive(Debug, Clone)]
pub struct UserOptions {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl Default for UserOptions {
    fn default() -> Self {
        let now = OffsetDateTime::now_utc();
        UserOptions { not_before: now - Duration::hours(1), not_after: now + Duration::days(365 * USER_YEARS) }
    }
}

/// Issues an identity for `name` and writes `DIR/NAME.qchat` (0600).
pub fn issue_user(dir: &Path, name: &str, server: &str) -> Result<PathBuf, CertsError> {
    issue_user_with(dir, name, server, &UserOptions::default())
}

/// [`issue_user`] with chosen validity (tests use it for expired certificates).
pub fn issue_user_with(dir: &Path, name: &str, server: &str, options: &UserOptions) -> Result<PathBuf, CertsError> {
    validate_user_name(name).map_err(CertsError::BadName)?;
    split_host_port(server).map_err(CertsError::BadServer)?;
    let pki = PkiDir::new(dir);
    let ca = Ca::load(&pki)?;
    if pki.users()?.iter().any(|u| u == name) {
        return Err(CertsError::UserExists(name.to_string()));
    }

    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.serial_number = Some(random_serial());
    params.not_before = options.not_before;
    params.not_after = options.not_after;
    let cert = params.signed_by(&key, &ca.cert, &ca.key)?;

    let mut identity = Identity {
        server: server.to_string(),
        user: name.to_string(),
        cert_pem: cert.pem(),
        ca_pem: ca.pem.clone(),
        key_pem: key.serialize_pem(),
        e2e: None,
    };
    // Its end-to-end keys, so that it can be written to before it ever connects: the
    // private half goes in the identity file, the public key package to the relay.
    let device = identity.device().ok_or_else(|| CertsError::BadName("the certificate has no serial".into()))?;
    let issued = qchat_e2e::Issued::make(&qchat_e2e::identity(name, &device))
        .map_err(|e| CertsError::BadName(format!("cannot make end-to-end keys: {e}")))?;
    let json = serde_json::to_vec(&issued).map_err(|e| CertsError::BadName(e.to_string()))?;
    identity.e2e = Some(data_encoding::BASE64.encode(&json));
    let keys = qchat_shared::identity::IssuedKeys {
        device,
        signature_key: issued.signature_key().to_vec(),
        key_package: issued.key_package.clone(),
    };
    let path = pki.identity(name);
    identity.save(&path).map_err(io_err(&path))?;
    fs::create_dir_all(dir.join("issued")).map_err(io_err(dir))?;
    // The CA's key lives here: nobody else needs to look inside.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io_err(dir))?;
    }
    write_public(&pki.issued_cert(name), &cert.pem())?;
    write_public(&pki.issued_keys(name), &keys.to_text())?;
    if !push_user(&pki, name)? {
        return Err(CertsError::UserExists(name.to_string()));
    }
    Ok(path)
}

/// Appends `name` to the users (under the PKI's lock); false if it is there already.
fn push_user(pki: &PkiDir, name: &str) -> Result<bool, CertsError> {
    locked(&pki.dir, || {
        let mut users = pki.users()?;
        if users.iter().any(|u| u == name) {
            return Ok(false);
        }
        users.push(name.to_string());
        write_public(&pki.users_file(), &(users.join("\n") + "\n"))?;
        Ok(true)
    })
}

/// Adds `name` to the PKI's users (a person with no identity file yet: their devices
/// enroll with invites). Nothing changes if they are there already.
pub fn add_user(dir: &Path, name: &str) -> Result<(), CertsError> {
    validate_user_name(name).map_err(CertsError::BadName)?;
    let pki = PkiDir::new(dir);
    pki.require()?;
    push_user(&pki, name).map(|_| ())
}

/// A certificate the relay signed for a device.
#[derive(Debug, Clone)]
pub struct DeviceCertificate {
    pub pem: String,
    pub serial: Vec<u8>,
    /// When it ends (Unix milliseconds).
    pub not_after_ms: i64,
}

/// Signs a certificate for `user`'s device `device` from the device's own request (PKCS#10,
/// DER): only the request's key is taken from it (its signature proves the device holds
/// the key); the names, usage and lifetime are the relay's. Without a device, the
/// certificate names none, like one from `qchat-certs user` (whose renewals the relay maps
/// to their device by serial).
pub fn sign_device(
    dir: &Path,
    user: &str,
    device: Option<&str>,
    csr_der: &[u8],
    lifetime: std::time::Duration,
) -> Result<DeviceCertificate, CertsError> {
    validate_user_name(user).map_err(CertsError::BadName)?;
    let ca = Ca::load(&PkiDir::new(dir))?;
    let der = rustls_pki_types::CertificateSigningRequestDer::from(csr_der.to_vec());
    let mut request =
        CertificateSigningRequestParams::from_der(&der).map_err(|e| CertsError::BadRequest(e.to_string()))?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.distinguished_name.push(DnType::CommonName, user);
    if let Some(device) = device {
        params.distinguished_name.push(DnType::OrganizationalUnitName, device);
    }
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let serial = random_serial();
    params.serial_number = Some(serial.clone());
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::minutes(5);
    let not_after = now + Duration::try_from(lifetime).unwrap_or(Duration::days(365));
    params.not_after = not_after;
    request.params = params;
    let cert = request.signed_by(&ca.cert, &ca.key)?;
    Ok(DeviceCertificate {
        pem: cert.pem(),
        serial: serial.to_bytes(),
        not_after_ms: (not_after.unix_timestamp_nanos() / 1_000_000) as i64,
    })
}

/// Revokes certificates by serial number (a device's, as `NAME/DEVICE`): rewrites the one
/// CRL that `qchat-certs revoke` writes too. Serials revoked before are skipped.
pub fn revoke_serials(dir: &Path, label: &str, serials: &[Vec<u8>]) -> Result<(), CertsError> {
    let pki = PkiDir::new(dir);
    let ca = Ca::load(&pki)?;
    locked(dir, || add_revocations(&pki, &ca, label, serials))
}

fn add_revocations(pki: &PkiDir, ca: &Ca, label: &str, serials: &[Vec<u8>]) -> Result<(), CertsError> {
    let mut revoked = pki.revoked()?;
    let before = revoked.len();
    for serial in serials {
        let serial = qchat_shared::hex::encode(serial);
        if !revoked.iter().any(|(_, s)| *s == serial) {
            revoked.push((label.to_string(), serial));
        }
    }
    if revoked.len() == before {
        return Ok(());
    }
    write_crl(pki, ca, &revoked)?;
    let lines: String = revoked.iter().map(|(n, s)| format!("{n} {s}\n")).collect();
    write_public(&pki.revoked_file(), &lines)
}

/// The first host name (or address) of the relay's certificate: where clients reach it
/// unless told otherwise.
pub fn relay_host(dir: &Path) -> Result<String, CertsError> {
    let path = PkiDir::new(dir).relay_cert();
    let bad = |detail: String| CertsError::BadCertificate { path: path.clone(), detail };
    let pem = read(&path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    let names = cert.subject_alternative_name().ok().flatten().ok_or_else(|| bad("it names no host".into()))?;
    names
        .value
        .general_names
        .iter()
        .find_map(|name| match name {
            x509_parser::extensions::GeneralName::DNSName(host) => Some(host.to_string()),
            x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                4 => Some(std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).ok()?).to_string()),
                16 => Some(format!("[{}]", std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).ok()?))),
                _ => None,
            },
            _ => None,
        })
        .ok_or_else(|| bad("it names no host".into()))
}

/// The fingerprint of this PKI's CA, as invites carry it.
pub fn ca_fingerprint(dir: &Path) -> Result<[u8; qchat_shared::invite::FINGERPRINT_BYTES], CertsError> {
    let path = PkiDir::new(dir).ca_cert();
    let certs = qchat_shared::tls::parse_certs(&read(&path)?, "the CA certificate")
        .map_err(|e| CertsError::BadCertificate { path: path.clone(), detail: e.to_string() })?;
    Ok(qchat_shared::invite::ca_fingerprint(&certs[0]))
}

/// Revokes `name`'s certificate: rewrites `crl.pem`, which a running relay reloads.
pub fn revoke(dir: &Path, name: &str) -> Result<(), CertsError> {
    let pki = PkiDir::new(dir);
    let ca = Ca::load(&pki)?;
    if !pki.users()?.iter().any(|u| u == name) {
        return Err(CertsError::UnknownUser(name.to_string()));
    }
    locked(dir, || {
        if pki.revoked()?.iter().any(|(n, _)| n == name) {
            return Err(CertsError::AlreadyRevoked(name.to_string()));
        }
        let serial = serial_of(&pki.issued_cert(name))?;
        add_revocations(&pki, &ca, name, &[qchat_shared::hex::decode(&serial).unwrap_or_default()])
    })
}

fn serial_of(cert_path: &Path) -> Result<String, CertsError> {
    let bad = |detail: String| CertsError::BadCertificate { path: cert_path.to_path_buf(), detail };
    let pem = read(cert_path)?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| bad(e.to_string()))?;
    let cert = pem.parse_x509().map_err(|e| bad(e.to_string()))?;
    Ok(qchat_shared::hex::encode(cert.raw_serial()))
}

fn write_crl(pki: &PkiDir, ca: &Ca, revoked: &[(String, String)]) -> Result<(), CertsError> {
    let now = OffsetDateTime::now_utc();
    let params = CertificateRevocationListParams {
        this_update: now - Duration::minutes(5),
        next_update: now + Duration::days(365 * CA_YEARS),
        crl_number: SerialNumber::from(revoked.len() as u64 + 1),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|(_, serial)| RevokedCertParams {
                serial_number: SerialNumber::from_slice(&qchat_shared::hex::decode(serial).unwrap_or_default()),
                revocation_time: now - Duration::minutes(1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&ca.cert, &ca.key)?;
    write_public(&pki.crl(), &crl.pem()?)
}

/// The relay's TLS material, read from a PKI directory.
#[derive(Debug, Clone)]
pub struct RelayMaterial {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
    pub crl_pem: String,
    /// The relay's users: every name issued.
    pub users: Vec<String>,
}

impl RelayMaterial {
    pub fn load(dir: &Path) -> Result<Self, CertsError> {
        let pki = PkiDir::new(dir);
        pki.require()?;
        let crl_pem = if pki.crl().exists() { read(&pki.crl())? } else { String::new() };
        Ok(RelayMaterial {
            cert_pem: read(&pki.relay_cert())?,
            key_pem: read(&pki.relay_key())?,
            ca_pem: read(&pki.ca_cert())?,
            crl_pem,
            users: pki.users()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_users_then_revoke() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        init(&dir, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let alice = issue_user(&dir, "alice", "127.0.0.1:21567").unwrap();
        issue_user(&dir, "bob", "127.0.0.1:21567").unwrap();
        let identity = Identity::load(&alice).unwrap();
        assert_eq!(identity.user, "alice");
        assert_eq!(
            qchat_shared::tls::common_name(&qchat_shared::tls::parse_certs(&identity.cert_pem, "t").unwrap()[0])
                .as_deref(),
            Some("alice")
        );
        assert_eq!(PkiDir::new(&dir).users().unwrap(), ["alice", "bob"]);
        revoke(&dir, "bob").unwrap();
        assert!(matches!(revoke(&dir, "bob"), Err(CertsError::AlreadyRevoked(_))));
        assert_eq!(qchat_shared::tls::parse_crls(&read(&PkiDir::new(&dir).crl()).unwrap()).unwrap().len(), 1);
    }

    #[test]
    fn refuses_to_overwrite_and_bad_names() {
        let tmp = tempfile::tempdir().unwrap();
        init(tmp.path(), &["localhost".into()]).unwrap();
        assert!(matches!(init(tmp.path(), &["x".into()]), Err(CertsError::AlreadyExists(_))));
        assert!(matches!(issue_user(tmp.path(), "Bad Name", "h:1"), Err(CertsError::BadName(_))));
        assert!(matches!(issue_user(tmp.path(), "ok", "nohost"), Err(CertsError::BadServer(_))));
        issue_user(tmp.path(), "ok", "h:1").unwrap();
        assert!(matches!(issue_user(tmp.path(), "ok", "h:1"), Err(CertsError::UserExists(_))));
    }

    #[test]
    fn a_reader_never_sees_a_half_written_users_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        init(&dir, &["localhost".into()]).unwrap();
        issue_user(&dir, "alice", "h:1").unwrap();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (dir, done) = (dir.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    let users = PkiDir::new(&dir).users().unwrap();
                    assert_eq!(users.first().map(String::as_str), Some("alice"), "read {users:?}");
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..150 {
            issue_user(&dir, &format!("user{i}"), "h:1").unwrap();
        }
        done.store(true, std::sync::atomic::Ordering::Release);
        assert!(reader.join().unwrap() > 0);
    }

    #[test]
    fn revocations_made_at_once_are_all_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        init(&dir, &["localhost".into()]).unwrap();
        let threads: Vec<_> = (0..8u8)
            .map(|i| {
                let dir = dir.clone();
                std::thread::spawn(move || revoke_serials(&dir, &format!("alice/d{i}"), &[vec![0x10, i]]).unwrap())
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(PkiDir::new(&dir).revoked().unwrap().len(), 8, "no revocation lost to another");
        let crl = read(&PkiDir::new(&dir).crl()).unwrap();
        assert_eq!(qchat_shared::tls::revoked_serials(&crl).unwrap().len(), 8);
    }

    #[cfg(unix)]
    #[test]
    fn keys_and_identities_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let pki = init(tmp.path(), &["localhost".into()]).unwrap();
        let id = issue_user(tmp.path(), "alice", "localhost:1").unwrap();
        for path in [pki.ca_key(), pki.relay_key(), id] {
            assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "{path:?}");
        }
        assert_eq!(fs::metadata(tmp.path()).unwrap().permissions().mode() & 0o777, 0o700, "the PKI directory");
    }
}
