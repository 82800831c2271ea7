//! A device's own keys: its signing key and MLS identity (`user/device`), the key packages
//! the relay hands out so that others can add it while it is away, and keys that were
//! made for it elsewhere ([`Issued`], by whoever issued its identity).

use std::path::Path;

use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_rust_crypto::RustCrypto;
use openmls_sqlite_storage::SqliteStorageProvider;
use openmls_traits::storage::StorageProvider as _;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::provider::{JsonCodec, Provider};
use crate::{mls, E2eError, CIPHERSUITE};

/// One device's end-to-end state, in its own SQLite file (0600 on Unix).
pub struct Device {
    pub(crate) connection: Connection,
    pub(crate) crypto: RustCrypto,
    pub(crate) signer: SignatureKeyPair,
    pub(crate) identity: String,
    /// Groups kept in memory between messages, as the store has them (each taken out while
    /// in use and put back only after its transaction committed; any change of members
    /// drops the room's).
    pub(crate) loaded: std::collections::HashMap<String, MlsGroup>,
}

/// Keys made for a device before it first runs (by `qchat-certs user`): the relay serves
/// `key_package` (a last-resort one: it can be used more than once) until the device
/// publishes its own, and the device takes the private half into its store on first
/// open. Whoever made it once held those private keys.
#[derive(Clone, Serialize, Deserialize)]
pub struct Issued {
    pub identity: String,
    signer: SignatureKeyPair,
    bundle: KeyPackageBundle,
    /// The public key package, as the relay serves it.
    pub key_package: Vec<u8>,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("identity", &self.identity).finish_non_exhaustive()
    }
}

impl Issued {
    /// Makes a signing key and a last-resort key package for `identity`.
    pub fn make(identity: &str) -> Result<Issued, E2eError> {
        let connection = Connection::open_in_memory()?;
        let mut device = Device::start(connection, identity, None)?;
        let bundle = device.key_package_bundle(true)?;
        let key_package = serialize_key_package(bundle.key_package())?;
        let Device { signer, .. } = device;
        Ok(Issued { identity: identity.to_string(), signer, bundle, key_package })
    }

    /// The signing key's public half.
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }
}

fn serialize_key_package(key_package: &KeyPackage) -> Result<Vec<u8>, E2eError> {
    MlsMessageOut::from(key_package.clone()).to_bytes().map_err(mls)
}

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS qchat_device (identity TEXT PRIMARY KEY, signature_key BLOB NOT NULL);
    CREATE TABLE IF NOT EXISTS qchat_opened (
        room TEXT NOT NULL, room_seq INTEGER NOT NULL, outcome TEXT NOT NULL, PRIMARY KEY (room, room_seq));
    CREATE TABLE IF NOT EXISTS qchat_pending (
        room TEXT PRIMARY KEY, commit_bytes BLOB NOT NULL, provisional INTEGER NOT NULL, merged INTEGER NOT NULL DEFAULT 0);
    CREATE TABLE IF NOT EXISTS qchat_secrets (id BLOB PRIMARY KEY, value BLOB NOT NULL);";

impl Device {
    /// Opens (or creates) the store at `path` for `identity`; `issued`, if the identity
    /// came with keys, is taken in the first time.
    pub fn open(path: &Path, identity: &str, issued: Option<&Issued>) -> Result<Device, E2eError> {
        // Made private before SQLite writes a byte (its WAL takes the same mode).
        if !path.exists() {
            qchat_shared::identity::write_secret(path, b"").map_err(|e| E2eError::Store(e.to_string()))?;
        }
        let connection = Connection::open(path)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        Device::start(connection, identity, issued)
    }

    fn start(mut connection: Connection, identity: &str, issued: Option<&Issued>) -> Result<Device, E2eError> {
        SqliteStorageProvider::<JsonCodec, &mut Connection>::new(&mut connection)
            .run_migrations()
            .map_err(|e| E2eError::Store(e.to_string()))?;
        connection.execute_batch(SCHEMA)?;
        let crypto = RustCrypto::default();
        let known: Option<Vec<u8>> = connection
            .query_row("SELECT signature_key FROM qchat_device WHERE identity = ?1", [identity], |r| r.get(0))
            .optional()?;
        let signer = match known {
            Some(public) => {
                let provider = Provider::new(&crypto, &connection);
                SignatureKeyPair::read(provider.storage(), &public, CIPHERSUITE.signature_algorithm())
                    .ok_or_else(|| E2eError::Store("the device's signing key is missing from its store".into()))?
            }
            None => {
                let provider = Provider::new(&crypto, &connection);
                let signer = match issued.filter(|i| i.identity == identity) {
                    Some(issued) => {
                        let hash = issued.bundle.key_package().hash_ref(&crypto).map_err(mls)?;
                        provider.storage().write_key_package(&hash, &issued.bundle).map_err(mls)?;
                        issued.signer.clone()
                    }
                    None => SignatureKeyPair::new(CIPHERSUITE.signature_algorithm()).map_err(mls)?,
                };
                signer.store(provider.storage()).map_err(mls)?;
                connection.execute(
                    "INSERT INTO qchat_device (identity, signature_key) VALUES (?1, ?2)",
                    params![identity, signer.public()],
                )?;
                signer
            }
        };
        Ok(Device { connection, crypto, signer, identity: identity.to_string(), loaded: Default::default() })
    }

    /// This device's MLS identity (`user/device`).
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The public half of this device's signing key: what its fingerprint and safety
    /// numbers are made of.
    pub fn signature_key(&self) -> &[u8] {
        self.signer.public()
    }

    pub(crate) fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.identity.as_bytes().to_vec()).into(),
            signature_key: self.signer.public().into(),
        }
    }

    fn key_package_bundle(&mut self, last_resort: bool) -> Result<KeyPackageBundle, E2eError> {
        let provider = Provider::new(&self.crypto, &self.connection);
        // Declares the last-resort extension, which the relay's spare packages carry.
        let capabilities = Capabilities::new(None, None, Some(&[ExtensionType::LastResort]), None, None);
        let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities);
        if last_resort {
            builder = builder.mark_as_last_resort();
        }
        builder.build(CIPHERSUITE, &provider, &self.signer, self.credential()).map_err(mls)
    }

    /// `count` fresh key packages for the relay to hand out (each used once), and one
    /// last-resort package when `last_resort`.
    pub fn key_packages(&mut self, count: usize, last_resort: bool) -> Result<Vec<Vec<u8>>, E2eError> {
        let mut out = Vec::with_capacity(count + 1);
        for i in 0..count + usize::from(last_resort) {
            let bundle = self.key_package_bundle(i == count)?;
            out.push(serialize_key_package(bundle.key_package())?);
        }
        Ok(out)
    }

    /// Keeps a secret of the application's (a file's key) under `id`.
    pub fn keep_secret(&self, id: &[u8], value: &[u8]) -> Result<(), E2eError> {
        self.connection
            .execute("INSERT OR REPLACE INTO qchat_secrets (id, value) VALUES (?1, ?2)", params![id, value])?;
        Ok(())
    }

    /// The secret kept under `id`.
    pub fn secret(&self, id: &[u8]) -> Result<Option<Vec<u8>>, E2eError> {
        Ok(self.connection.query_row("SELECT value FROM qchat_secrets WHERE id = ?1", [id], |r| r.get(0)).optional()?)
    }
}

/// Reads a key package from the relay and checks it: its signature, and that it is the
/// one of `identity` with signing key `signature_key`.
pub(crate) fn check_key_package(
    crypto: &RustCrypto,
    bytes: &[u8],
    identity: &str,
    signature_key: &[u8],
) -> Result<KeyPackage, String> {
    use tls_codec::Deserialize as _;
    let message = MlsMessageIn::tls_deserialize_exact(bytes).map_err(|e| format!("not a key package: {e}"))?;
    let MlsMessageBodyIn::KeyPackage(key_package) = message.extract() else {
        return Err("not a key package".into());
    };
    let key_package = key_package.validate(crypto, ProtocolVersion::Mls10).map_err(|e| format!("{e:?}"))?;
    let leaf = key_package.leaf_node();
    let named = BasicCredential::try_from(leaf.credential().clone()).map(|c| c.identity().to_vec()).ok();
    if named.as_deref() != Some(identity.as_bytes()) {
        return Err(format!("the key package for {identity} names someone else"));
    }
    if leaf.signature_key().as_slice() != signature_key {
        return Err(format!("the key package for {identity} has another signing key than the relay knows"));
    }
    Ok(key_package)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_keeps_the_same_signing_key_across_restarts_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mls.db");
        let first = Device::open(&path, "alice/laptop", None).unwrap();
        let key = first.signature_key().to_vec();
        drop(first);
        let again = Device::open(&path, "alice/laptop", None).unwrap();
        assert_eq!(again.signature_key(), key);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn issued_keys_become_the_device_s_and_its_key_package_checks_out() {
        let issued = Issued::make("bob/main").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let device = Device::open(&dir.path().join("mls.db"), "bob/main", Some(&issued)).unwrap();
        assert_eq!(device.signature_key(), issued.signature_key());
        let crypto = RustCrypto::default();
        let checked = check_key_package(&crypto, &issued.key_package, "bob/main", issued.signature_key()).unwrap();
        assert!(checked.last_resort());
        assert!(check_key_package(&crypto, &issued.key_package, "mallory/x", issued.signature_key()).is_err());
        assert!(check_key_package(&crypto, &issued.key_package, "bob/main", &[0; 32]).is_err());
        assert!(check_key_package(&crypto, b"junk", "bob/main", issued.signature_key()).is_err());
    }
}
