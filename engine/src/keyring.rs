//! The keyring: a master key (KEK) from a passphrase or key file, and random data keys (DEKs) per
//! table and sensitivity class, wrapped by the KEK and stored with the lake in `_meta/keyring.json`.
//!
//! Key ids (`<table>.<class>.v<version>`) travel in the Parquet key metadata of every encrypted column
//! and footer; [`SessionKeys`] resolves them for a reader and holds only the classes the reader is
//! cleared for. No key ever appears in `Debug` output, logs or errors.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use parquet::encryption::decrypt::{FileDecryptionProperties, KeyRetriever};
use parquet::encryption::encrypt::FileEncryptionProperties;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::model::{Class, Table};
use crate::store::LakeStore;

const KEYRING_PATH: &str = "_meta/keyring.json";
const CHECK_PLAINTEXT: &[u8] = b"kartoteka keyring check v1";
const CHECK_AAD: &[u8] = b"kek-check";
const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// A 256-bit secret key. `Debug` prints nothing of it; memory is wiped on drop.
#[derive(Clone)]
pub struct SecretKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(<redacted>)")
    }
}

impl SecretKey {
    /// A fresh random key from the OS generator.
    pub fn random() -> SecretKey {
        let mut k = Zeroizing::new([0u8; KEY_LEN]);
        rand::rng().fill_bytes(k.as_mut());
        SecretKey(k)
    }

    fn bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(self.bytes()).expect("a 32-byte key is a valid AES-256 key")
    }

    fn from_slice(bytes: &[u8]) -> Option<SecretKey> {
        let arr: [u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(SecretKey(Zeroizing::new(arr)))
    }
}

/// Where the master key comes from.
pub enum MasterKeySource {
    /// A passphrase, stretched with argon2id and the salt stored in the keyring.
    Passphrase(Zeroizing<String>),
    /// A key file holding 32 random bytes as hex (for demos and development; production runs sealed).
    KeyFile(SecretKey),
}

impl fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterKeySource::Passphrase(_) => {
                f.write_str("MasterKeySource::Passphrase(<redacted>)")
            }
            MasterKeySource::KeyFile(_) => f.write_str("MasterKeySource::KeyFile(<redacted>)"),
        }
    }
}

impl MasterKeySource {
    /// Read a key file (hex, 64 characters).
    pub fn from_key_file(path: &Path) -> Result<MasterKeySource> {
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(Error::io("cannot read key file", path))?,
        );
        let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| Error::Io {
            action: "key file is not 64 hex characters",
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })?);
        let key = SecretKey::from_slice(&bytes).ok_or_else(|| Error::Io {
            action: "key file does not hold a 32-byte key",
            path: path.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::InvalidData),
        })?;
        Ok(MasterKeySource::KeyFile(key))
    }

    /// Create a new key file with a random key, readable by the owner only (0600).
    pub fn create_key_file(path: &Path) -> Result<MasterKeySource> {
        use std::io::Write;
        #[cfg(unix)]
        use std::os::unix::fs::OpenOptionsExt;
        let key = SecretKey::random();
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        opts.mode(0o600);
        let mut f = opts
            .open(path)
            .map_err(Error::io("cannot create key file", path))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key.bytes())));
        f.write_all(text.as_bytes())
            .map_err(Error::io("cannot write key file", path))?;
        f.sync_all()
            .map_err(Error::io("cannot sync key file", path))?;
        Ok(MasterKeySource::KeyFile(key))
    }

    fn kind(&self) -> &'static str {
        match self {
            MasterKeySource::Passphrase(_) => "passphrase",
            MasterKeySource::KeyFile(_) => "key file",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
enum KekSpec {
    Passphrase {
        salt: String,
        m_kib: u32,
        t: u32,
        p: u32,
    },
    KeyFile,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct WrappedKey {
    id: String,
    table: String,
    class: Class,
    version: u32,
    /// base64(nonce || AES-256-GCM(dek, aad = id))
    wrapped: String,
    created_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct KeyringFile {
    format: u32,
    kek: KekSpec,
    /// base64(nonce || AES-256-GCM(CHECK_PLAINTEXT)) — proves the master key is right before any data is read.
    kek_check: String,
    keys: Vec<WrappedKey>,
    /// base64(nonce || AES-256-GCM(token secret, aad = "token-secret")): the HMAC key of pii tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    token_secret: Option<String>,
}

/// The unwrapped keyring of one lake.
pub struct Keyring {
    file: KeyringFile,
    kek: SecretKey,
    deks: BTreeMap<String, SecretKey>,
    token_secret: SecretKey,
}

const TOKEN_AAD: &[u8] = b"token-secret";

/// A data key's id and when it was made, for listings (no key material).
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// `<table>.<class>.v<version>`
    pub id: String,
    /// Table the key encrypts.
    pub table: String,
    /// Sensitivity class.
    pub class: Class,
    /// Version (the highest is current).
    pub version: u32,
    /// Whether new files are written with it.
    pub current: bool,
    /// When it was created.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("kek", &"<redacted>")
            .field("key_ids", &self.deks.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// `nonce || AES-256-GCM(plaintext, aad)` under `key`, with a fresh random nonce.
fn seal_bytes(key: &SecretKey, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let ct = key
        .cipher()
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption cannot fail below its 64 GiB message limit");
    let mut out = nonce.to_vec();
    out.extend_from_slice(&ct);
    out
}

/// Open what [`seal_bytes`] sealed; `None` if it was altered or sealed under another key or `aad`.
fn open_bytes(key: &SecretKey, sealed: &[u8], aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    key.cipher()
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
        .ok()
        .map(Zeroizing::new)
}

fn seal(key: &SecretKey, plaintext: &[u8], aad: &[u8]) -> String {
    B64.encode(seal_bytes(key, plaintext, aad))
}

fn open(key: &SecretKey, sealed: &str, aad: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    open_bytes(key, &B64.decode(sealed).ok()?, aad)
}

fn new_kek_spec(source: &MasterKeySource) -> KekSpec {
    match source {
        MasterKeySource::Passphrase(_) => {
            let mut salt = [0u8; 16];
            rand::rng().fill_bytes(&mut salt);
            KekSpec::Passphrase {
                salt: B64.encode(salt),
                m_kib: ARGON_M_KIB,
                t: ARGON_T,
                p: 1,
            }
        }
        MasterKeySource::KeyFile(_) => KekSpec::KeyFile,
    }
}

fn derive_kek(spec: &KekSpec, source: &MasterKeySource) -> Result<SecretKey> {
    match (spec, source) {
        (KekSpec::Passphrase { salt, m_kib, t, p }, MasterKeySource::Passphrase(pass)) => {
            let salt = B64.decode(salt).map_err(|_| Error::KeyringCorrupt {
                what: "salt".into(),
            })?;
            let params = argon2::Params::new(*m_kib, *t, *p, Some(KEY_LEN)).map_err(|_| {
                Error::KeyringCorrupt {
                    what: "argon2 parameters".into(),
                }
            })?;
            let argon =
                argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
            let mut out = Zeroizing::new([0u8; KEY_LEN]);
            argon
                .hash_password_into(pass.as_bytes(), &salt, out.as_mut())
                .map_err(|_| Error::KeyringCorrupt {
                    what: "argon2 salt".into(),
                })?;
            Ok(SecretKey(out))
        }
        (KekSpec::KeyFile, MasterKeySource::KeyFile(k)) => Ok(k.clone()),
        (KekSpec::Passphrase { .. }, MasterKeySource::KeyFile(_)) => Err(Error::PassphraseRequired),
        (KekSpec::KeyFile, MasterKeySource::Passphrase(_)) => Err(Error::WrongMasterKey {
            source_kind: "passphrase (this lake is opened with its key file, not a passphrase)",
        }),
    }
}

/// argon2id cost for new passphrase keyrings: 64 MiB, 3 passes (above OWASP's minimum).
const ARGON_M_KIB: u32 = 64 * 1024;
const ARGON_T: u32 = 3;

impl Keyring {
    /// Does this lake already have a keyring?
    pub async fn exists(store: &LakeStore) -> Result<bool> {
        store.exists(KEYRING_PATH).await
    }

    /// Create the keyring of a new lake, protected by `source`.
    pub async fn create(store: &LakeStore, source: &MasterKeySource) -> Result<Keyring> {
        let kek_spec = new_kek_spec(source);
        let kek = derive_kek(&kek_spec, source)?;
        let token_secret = SecretKey::random();
        let file = KeyringFile {
            format: 1,
            kek_check: seal(&kek, CHECK_PLAINTEXT, CHECK_AAD),
            kek: kek_spec,
            keys: Vec::new(),
            token_secret: Some(seal(&kek, token_secret.bytes(), TOKEN_AAD)),
        };
        let ring = Keyring {
            file,
            kek,
            deks: BTreeMap::new(),
            token_secret,
        };
        ring.save(store).await?;
        Ok(ring)
    }

    /// Open the keyring of an existing lake; a wrong master key is reported before anything is read.
    pub async fn open(store: &LakeStore, source: &MasterKeySource) -> Result<Keyring> {
        let bytes = store.get(KEYRING_PATH).await?;
        let file: KeyringFile =
            serde_json::from_slice(&bytes).map_err(|source| Error::BadMetadata {
                path: KEYRING_PATH.into(),
                source,
            })?;
        let kek = derive_kek(&file.kek, source)?;
        match open(&kek, &file.kek_check, CHECK_AAD) {
            Some(check) if check.as_slice() == CHECK_PLAINTEXT => {}
            _ => {
                return Err(Error::WrongMasterKey {
                    source_kind: source.kind(),
                });
            }
        }
        let mut deks = BTreeMap::new();
        for k in &file.keys {
            let raw = open(&kek, &k.wrapped, k.id.as_bytes())
                .ok_or_else(|| Error::KeyringCorrupt { what: k.id.clone() })?;
            let key = SecretKey::from_slice(&raw)
                .ok_or_else(|| Error::KeyringCorrupt { what: k.id.clone() })?;
            deks.insert(k.id.clone(), key);
        }
        let (token_secret, save) = match &file.token_secret {
            Some(sealed) => {
                let raw = open(&kek, sealed, TOKEN_AAD).ok_or_else(|| Error::KeyringCorrupt {
                    what: "token secret".into(),
                })?;
                let key = SecretKey::from_slice(&raw).ok_or_else(|| Error::KeyringCorrupt {
                    what: "token secret".into(),
                })?;
                (key, false)
            }
            // Keyrings made before tokens existed get their secret on first open.
            None => (SecretKey::random(), true),
        };
        let mut ring = Keyring {
            file,
            kek,
            deks,
            token_secret,
        };
        if save {
            ring.file.token_secret = Some(seal(&ring.kek, ring.token_secret.bytes(), TOKEN_AAD));
            ring.save(store).await?;
        }
        Ok(ring)
    }

    /// Re-wrap every data key and the token secret under a new master key from `source`, without
    /// touching data files. Afterwards only the new master key opens the lake.
    pub async fn rotate_master(
        &mut self,
        store: &LakeStore,
        source: &MasterKeySource,
    ) -> Result<()> {
        let spec = new_kek_spec(source);
        let kek = derive_kek(&spec, source)?;
        let mut file = self.file.clone();
        file.kek = spec;
        file.kek_check = seal(&kek, CHECK_PLAINTEXT, CHECK_AAD);
        for k in &mut file.keys {
            k.wrapped = seal(&kek, self.deks[&k.id].bytes(), k.id.as_bytes());
        }
        file.token_secret = Some(seal(&kek, self.token_secret.bytes(), TOKEN_AAD));
        let json = serde_json::to_vec_pretty(&file).expect("keyring file serialises");
        store.put_durable(KEYRING_PATH, json).await?;
        self.file = file;
        self.kek = kek;
        Ok(())
    }

    /// Issue a new version of every data key; files written from now on use the new versions.
    /// Returns the new key ids. Old versions stay until no live file uses them (see [`Self::prune`]).
    pub async fn rotate_data_keys(&mut self, store: &LakeStore) -> Result<Vec<String>> {
        let mut current: BTreeMap<(String, Class), u32> = BTreeMap::new();
        for k in &self.file.keys {
            let v = current.entry((k.table.clone(), k.class)).or_default();
            *v = (*v).max(k.version);
        }
        let mut new_ids = Vec::new();
        for ((table, class), version) in current {
            let version = version + 1;
            let id = format!("{table}.{class}.v{version}");
            let dek = SecretKey::random();
            self.file.keys.push(WrappedKey {
                id: id.clone(),
                table,
                class,
                version,
                wrapped: seal(&self.kek, dek.bytes(), id.as_bytes()),
                created_at: chrono::Utc::now(),
            });
            self.deks.insert(id.clone(), dek);
            new_ids.push(id);
        }
        self.save(store).await?;
        Ok(new_ids)
    }

    /// Forget data keys that are not current and that no file in `used` needs any more.
    /// Returns the ids removed.
    pub async fn prune(
        &mut self,
        store: &LakeStore,
        used: &std::collections::BTreeSet<String>,
    ) -> Result<Vec<String>> {
        let current: Vec<String> = self
            .file
            .keys
            .iter()
            .filter_map(|k| self.current_key_id(&k.table, k.class).map(str::to_string))
            .collect();
        let removed: Vec<String> = self
            .file
            .keys
            .iter()
            .filter(|k| !used.contains(&k.id) && !current.contains(&k.id))
            .map(|k| k.id.clone())
            .collect();
        if !removed.is_empty() {
            self.file.keys.retain(|k| !removed.contains(&k.id));
            for id in &removed {
                self.deks.remove(id);
            }
            self.save(store).await?;
        }
        Ok(removed)
    }

    /// The data keys, without key material.
    pub fn list(&self) -> Vec<KeyInfo> {
        self.file
            .keys
            .iter()
            .map(|k| KeyInfo {
                id: k.id.clone(),
                table: k.table.clone(),
                class: k.class,
                version: k.version,
                current: self.current_key_id(&k.table, k.class) == Some(k.id.as_str()),
                created_at: k.created_at,
            })
            .collect()
    }

    /// The keyed-hash token of a pii value: `tok_` and 20 hex digits of HMAC-SHA256 under the lake's
    /// token secret. Equal values give equal tokens, so people can be counted without being seen.
    pub fn tokenize(&self, value: &str) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.token_secret.bytes())
            .expect("HMAC takes keys of any length");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        format!("tok_{}", &hex::encode(digest)[..20])
    }

    /// A key for one purpose, derived from the lake's token secret (random, kept wrapped by the master
    /// key, so derived keys survive master-key rotation): HMAC-SHA256 of `label`.
    fn derived_key(&self, label: &[u8]) -> SecretKey {
        use hmac::{Hmac, Mac};
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(self.token_secret.bytes())
            .expect("HMAC takes keys of any length");
        mac.update(label);
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        key.copy_from_slice(&mac.finalize().into_bytes());
        SecretKey(key)
    }

    /// The key sealing the report archive.
    fn archive_key(&self) -> SecretKey {
        self.derived_key(b"kartoteka/report-archive/v1")
    }

    /// Seal a user's secret (a TOTP secret) under its own derived key, bound to `aad` (the user).
    pub fn seal_user_secret(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_bytes(
            &self.derived_key(b"kartoteka/user-secrets/v1"),
            plaintext,
            aad,
        )
    }

    /// Open what [`Keyring::seal_user_secret`] sealed with the same `aad`; `None` otherwise.
    pub fn open_user_secret(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open_bytes(&self.derived_key(b"kartoteka/user-secrets/v1"), sealed, aad)
    }

    /// The authentication code of a snapshot manifest's bytes: hex HMAC-SHA256 under a key derived
    /// from the lake's secret, so a manifest cannot be edited, forged or swapped without the keys.
    pub fn snapshot_mac(&self, manifest: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let key = self.derived_key(b"kartoteka/snapshot-mac/v1");
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.bytes())
            .expect("HMAC takes keys of any length");
        mac.update(manifest);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Seal `plaintext` for the report archive: `nonce || AES-256-GCM(plaintext, aad)`. `aad` binds
    /// the sealed bytes to their place (a file moved elsewhere no longer opens).
    pub fn seal_blob(&self, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        seal_bytes(&self.archive_key(), plaintext, aad)
    }

    /// Open what [`Keyring::seal_blob`] sealed with the same `aad`; `None` if it was altered, moved,
    /// or sealed under another lake's keys.
    pub fn open_blob(&self, aad: &[u8], sealed: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
        open_bytes(&self.archive_key(), sealed, aad)
    }

    async fn save(&self, store: &LakeStore) -> Result<()> {
        let json = serde_json::to_vec_pretty(&self.file).expect("keyring file serialises");
        store.put_durable(KEYRING_PATH, json).await
    }

    fn current_key_id(&self, table: &str, class: Class) -> Option<&str> {
        self.file
            .keys
            .iter()
            .filter(|k| k.table == table && k.class == class)
            .max_by_key(|k| k.version)
            .map(|k| k.id.as_str())
    }

    /// Make sure every class of `table` has a current data key, creating (and saving) missing ones.
    /// Called by the writer before it writes files, so a key is always stored before data uses it.
    pub async fn ensure_table_keys(&mut self, store: &LakeStore, table: &Table) -> Result<()> {
        let mut changed = false;
        for class in table.classes() {
            if self.current_key_id(table.name, class).is_none() {
                let id = format!("{}.{}.v1", table.name, class);
                let dek = SecretKey::random();
                self.file.keys.push(WrappedKey {
                    id: id.clone(),
                    table: table.name.to_string(),
                    class,
                    version: 1,
                    wrapped: seal(&self.kek, dek.bytes(), id.as_bytes()),
                    created_at: chrono::Utc::now(),
                });
                self.deks.insert(id, dek);
                changed = true;
            }
        }
        if changed {
            self.save(store).await?;
        }
        Ok(())
    }

    /// Encryption properties for a new data file of `table` at `path`: every column encrypted with
    /// its class's key (a column without a key would be written in plaintext), the footer encrypted
    /// with the internal key, and the file path as AAD prefix so files cannot be swapped.
    pub fn file_encryption(
        &self,
        table: &Table,
        path: &str,
    ) -> Result<(Arc<FileEncryptionProperties>, Vec<String>)> {
        let key = |class: Class| -> Result<(&str, &SecretKey)> {
            let id = self
                .current_key_id(table.name, class)
                .ok_or_else(|| Error::MissingKey {
                    key_id: format!("{}.{}", table.name, class),
                    reason: "no data key was created for this table and class",
                })?;
            Ok((id, &self.deks[id]))
        };
        let (footer_id, footer_key) = key(Class::Internal)?;
        let mut builder = FileEncryptionProperties::builder(footer_key.bytes().to_vec())
            .with_footer_key_metadata(footer_id.as_bytes().to_vec())
            .with_aad_prefix(path.as_bytes().to_vec())
            .with_aad_prefix_storage(false);
        let mut used = vec![footer_id.to_string()];
        // Every stored column, token columns included, gets its class's key: a column without a key
        // would be written in plaintext.
        let stored = table.stored_schema();
        for field in stored.fields() {
            let class = field
                .metadata()
                .get(crate::model::CLASS_KEY)
                .and_then(|c| Class::parse(c))
                .ok_or_else(|| Error::MissingKey {
                    key_id: format!("{}.{}", table.name, field.name()),
                    reason: "the column has no sensitivity class",
                })?;
            let (id, k) = key(class)?;
            builder = builder.with_column_key_and_metadata(
                field.name(),
                k.bytes().to_vec(),
                id.as_bytes().to_vec(),
            );
            if !used.iter().any(|u| u == id) {
                used.push(id.to_string());
            }
        }
        Ok((builder.build()?, used))
    }

    /// The keys of the given classes, for one reading session. Keys of other classes stay here.
    pub fn session_keys(&self, classes: &[Class]) -> Arc<SessionKeys> {
        let keys = self
            .file
            .keys
            .iter()
            .filter(|k| classes.contains(&k.class))
            .map(|k| (k.id.clone(), self.deks[&k.id].clone()))
            .collect();
        Arc::new(SessionKeys { keys })
    }

    /// Ids of all data keys (no key material).
    pub fn key_ids(&self) -> Vec<String> {
        self.deks.keys().cloned().collect()
    }
}

/// The data keys handed to one reading session.
pub struct SessionKeys {
    keys: BTreeMap<String, SecretKey>,
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeyRetriever for SessionKeys {
    fn retrieve_key(&self, key_metadata: &[u8]) -> parquet::errors::Result<Vec<u8>> {
        let id = String::from_utf8_lossy(key_metadata);
        match self.keys.get(id.as_ref()) {
            Some(k) => Ok(k.bytes().to_vec()),
            None => Err(parquet::errors::ParquetError::General(format!(
                "no data key {id} in this session (the key is unknown to the keyring or this session is not cleared for it)"
            ))),
        }
    }
}

impl SessionKeys {
    /// Ids of the keys held (no key material).
    pub fn ids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

    /// Decryption properties for the file at `path` (the path is the AAD prefix the writer used).
    pub fn decryption_properties(
        self: &Arc<Self>,
        path: &str,
    ) -> Result<Arc<FileDecryptionProperties>> {
        let retriever: Arc<dyn KeyRetriever> = Arc::clone(self) as Arc<dyn KeyRetriever>;
        Ok(FileDecryptionProperties::with_key_retriever(retriever)
            .with_aad_prefix(path.as_bytes().to_vec())
            .build()?)
    }
}
