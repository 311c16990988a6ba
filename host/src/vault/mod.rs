//! The credential vault: `DATA_DIR/vault.abv`, envelope-encrypted.
//!
//! - A random 256-bit data key (DEK) encrypts every record with
//!   XChaCha20-Poly1305 under a fresh 24-byte random nonce; the associated
//!   data binds each ciphertext to the vault id, its name, version and kind,
//!   so swapping two records (a paper key for a live key) fails to decrypt.
//! - The DEK is wrapped in one or more *key slots*, each under a key
//!   encryption key (KEK): an Argon2id passphrase (parameters stored in the
//!   slot) or a 32-byte key file. Either slot opens the vault.
//! - The whole document (header, slots, record metadata and ciphertexts) is
//!   authenticated with HMAC-SHA256 under a key derived from the DEK, so a
//!   deleted, added or edited record or slot refuses to open.
//! - Writes go to a temp file that is fsynced and renamed over the vault
//!   (then the directory is fsynced), under an advisory lock on
//!   `vault.lock`; the previous generation stays as `vault.abv.bak` until
//!   the next write.
//!
//! Values are set, replaced, deleted and listed by name; nothing reads a
//! value back out of the host except the capabilities that use it on a
//! plugin's behalf (header injection, signing), and the webhook guards.
//! Design notes: `../shared/docs/security.md` §4 and `docs/security.md`.

pub mod unlock;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

pub use unlock::Unlock;

/// The vault file's name in the data dir.
pub const VAULT_FILE: &str = "vault.abv";
/// The default key file (a key-file slot), made by `init`.
pub const DEFAULT_KEY_FILE: &str = "keys/vault.key";
/// The record holding the audit signing key's seed.
pub const AUDIT_KEY_RECORD: &str = "algobanana.audit-signing-key";

const MAGIC: &str = "algobanana-vault";
const FORMAT: u32 = 1;

/// Argon2id parameters for a passphrase slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Iterations.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about half a second once per start on a
    /// small machine, above the OWASP minimum (19 MiB, t = 2).
    fn default() -> Self {
        Self {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// The smallest memory accepted (the OWASP minimum).
    pub const MIN_M_KIB: u32 = 19 * 1024;
}

/// Why the vault could not be opened, read or written. No variant carries
/// secret bytes.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// No vault file.
    #[error("there is no vault at {0}; create one with `algobanana vault init`")]
    Missing(PathBuf),
    /// A vault already exists.
    #[error("a vault already exists at {0}; it was left untouched")]
    Exists(PathBuf),
    /// No unlock source was given.
    #[error(
        "the vault at {0} is locked: set ALGOBANANA_VAULT_PASSPHRASE or ALGOBANANA_VAULT_PASSPHRASE_FILE, or pass --vault-key-file (the vault opens with its passphrase or its key file)"
    )]
    Locked(PathBuf),
    /// No slot opened with what was given.
    #[error(
        "the vault at {path} did not open with the {what}: it is wrong, or the vault file was altered; check it (a lost passphrase and key file cannot be recovered; restore vault.abv from a backup)"
    )]
    WrongKey {
        /// The vault file.
        path: PathBuf,
        /// "passphrase" or "key file …".
        what: String,
    },
    /// The document's authentication failed, or a record did not decrypt.
    #[error(
        "the vault at {path} has been altered or damaged ({detail}); algobanana refuses to use it. Restore vault.abv from a backup (the previous generation is vault.abv.bak)"
    )]
    Tampered {
        /// The vault file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// Not a vault file, or an unknown format version.
    #[error("{path} is not an algobanana vault ({detail})")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// A bad name or argument.
    #[error("{0}")]
    Invalid(String),
    /// File system errors.
    #[error("vault {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong and what to do.
        message: String,
    },
}

/// One key slot: the DEK wrapped under a KEK.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Slot {
    kind: SlotKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kdf: Option<KdfParams>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    salt: String,
    nonce: String,
    wrapped: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SlotKind {
    Passphrase,
    KeyFile,
}

impl SlotKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Passphrase => "passphrase",
            Self::KeyFile => "key-file",
        }
    }
}

/// One encrypted record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    name: String,
    kind: RecordKind,
    version: u64,
    created_at_ns: i64,
    updated_at_ns: i64,
    nonce: String,
    ciphertext: String,
}

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// A user secret (broker keys, webhook secrets…).
    Secret,
    /// A key of the host's own (the audit signing key).
    System,
}

impl RecordKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::Secret => "secret",
            Self::System => "system",
        }
    }
}

/// The file.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Document {
    magic: String,
    format: u32,
    vault_id: String,
    generation: u64,
    slots: Vec<Slot>,
    records: Vec<Record>,
    #[serde(default)]
    mac: String,
}

/// What `list` shows: never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretMeta {
    /// The name.
    pub name: String,
    /// Secret or system.
    pub kind: RecordKind,
    /// Bumped on every replacement.
    pub version: u64,
    /// First set (UTC ns).
    pub created_at_ns: i64,
    /// Last set (UTC ns).
    pub updated_at_ns: i64,
}

/// Whether `set` made a new record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SetOutcome {
    /// A new name.
    Created,
    /// A new version of an existing name.
    Replaced,
}

type Dek = Zeroizing<[u8; 32]>;

/// An open (unlocked) vault. The DEK stays in this value, boxed and zeroed
/// on drop; `Debug` prints only the path.
pub struct Vault {
    path: PathBuf,
    dek: Dek,
    state: Mutex<Loaded>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Vault({}, REDACTED)", self.path.display())
    }
}

struct Loaded {
    doc: Document,
    stamp: Option<(SystemTime, u64)>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn unb64(s: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

fn slot_aad(vault_id: &str, kind: SlotKind) -> Vec<u8> {
    format!("algobanana-vault-slot\0{vault_id}\0{}", kind.as_str()).into_bytes()
}

fn record_aad(vault_id: &str, name: &str, version: u64, kind: RecordKind) -> Vec<u8> {
    format!(
        "algobanana-vault-record\0{vault_id}\0{name}\0{version}\0{}",
        kind.as_str()
    )
    .into_bytes()
}

fn mac_key(dek: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(dek).expect("any key length");
    m.update(b"algobanana vault document mac v1");
    Zeroizing::new(m.finalize().into_bytes().into())
}

fn document_hmac(dek: &[u8; 32], doc: &Document) -> Hmac<Sha256> {
    let mut unsigned = doc.clone();
    unsigned.mac = String::new();
    let bytes = serde_json::to_vec(&unsigned).expect("the document serialises");
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(mac_key(dek).as_ref()).expect("any key length");
    m.update(&bytes);
    m
}

fn document_mac(dek: &[u8; 32], doc: &Document) -> Vec<u8> {
    document_hmac(dek, doc).finalize().into_bytes().to_vec()
}

/// Constant-time check of the document's tag.
fn mac_matches(dek: &[u8; 32], doc: &Document, presented: &[u8]) -> bool {
    document_hmac(dek, doc).verify_slice(presented).is_ok()
}

fn kek_from_passphrase(passphrase: &[u8], salt: &[u8], kdf: KdfParams) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
        .map_err(|e| VaultError::Invalid(format!("Argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase, salt, out.as_mut())
        .map_err(|e| VaultError::Invalid(format!("Argon2id: {e}")))?;
    Ok(out)
}

fn seal(key: &[u8; 32], aad: &[u8], plaintext: &[u8]) -> (String, String) {
    let nonce = random::<24>();
    let cipher = XChaCha20Poly1305::new(key.into());
    let ct = cipher
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 encryption does not fail for in-memory buffers");
    (b64(&nonce), b64(&ct))
}

fn open_sealed(key: &[u8; 32], aad: &[u8], nonce: &str, ct: &str) -> Option<Zeroizing<Vec<u8>>> {
    let nonce = unb64(nonce).filter(|n| n.len() == 24)?;
    let ct = unb64(ct)?;
    let cipher = XChaCha20Poly1305::new(key.into());
    cipher
        .decrypt(XNonce::from_slice(&nonce), Payload { msg: &ct, aad })
        .ok()
        .map(Zeroizing::new)
}

/// Secret names: 1–64 of lowercase letters, digits, `-`, `_`, `.`; the
/// `algobanana.` prefix is the host's own.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

fn stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Vault {
    /// The vault path in `data_dir`.
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join(VAULT_FILE)
    }

    /// The vault file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates a new vault at `path` with a slot for each unlock source
    /// given (at least one).
    ///
    /// # Errors
    /// [`VaultError::Exists`], [`VaultError::Locked`] when `unlock` is
    /// empty, I/O errors.
    pub fn create(path: &Path, unlock: &Unlock, kdf: KdfParams) -> Result<Self, VaultError> {
        if path.exists() {
            return Err(VaultError::Exists(path.to_owned()));
        }
        if kdf.m_kib < KdfParams::MIN_M_KIB {
            return Err(VaultError::Invalid(format!(
                "Argon2id memory {} KiB is below the minimum of {} KiB (19 MiB)",
                kdf.m_kib,
                KdfParams::MIN_M_KIB
            )));
        }
        let dek: Dek = Zeroizing::new(random::<32>());
        let vault_id = hex::encode(random::<16>());
        let slots = make_slots(&vault_id, &dek, unlock, kdf)?;
        if slots.is_empty() {
            return Err(VaultError::Locked(path.to_owned()));
        }
        let doc = Document {
            magic: MAGIC.into(),
            format: FORMAT,
            vault_id,
            generation: 0,
            slots,
            records: Vec::new(),
            mac: String::new(),
        };
        let vault = Self {
            path: path.to_owned(),
            dek,
            state: Mutex::new(Loaded { doc, stamp: None }),
        };
        vault.write_locked(|_| Ok(()))?;
        Ok(vault)
    }

    /// Opens and unlocks the vault at `path`, checking the whole document
    /// and decrypting every record once (so a damaged record refuses start,
    /// not the first order).
    ///
    /// # Errors
    /// [`VaultError`] naming what failed and what to do.
    pub fn open(path: &Path, unlock: &Unlock) -> Result<Self, VaultError> {
        if !path.exists() {
            return Err(VaultError::Missing(path.to_owned()));
        }
        check_permissions(path)?;
        let doc = read_document(path)?;
        let dek = unwrap_dek(path, &doc, unlock)?;
        verify_document(path, &dek, &doc)?;
        let vault = Self {
            path: path.to_owned(),
            dek,
            state: Mutex::new(Loaded {
                stamp: stamp(path),
                doc,
            }),
        };
        Ok(vault)
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, Loaded> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Re-reads the file when another process (the CLI) changed it.
    fn refresh(&self, loaded: &mut Loaded) -> Result<(), VaultError> {
        let now = stamp(&self.path);
        if now.is_some() && now == loaded.stamp {
            return Ok(());
        }
        let doc = read_document(&self.path)?;
        verify_document(&self.path, &self.dek, &doc).map_err(|e| match e {
            VaultError::Tampered { path, detail } => VaultError::Tampered {
                path,
                detail: format!(
                    "{detail}; if the data key was rotated (`vault rotate`) while the host ran, restart the host"
                ),
            },
            other => other,
        })?;
        loaded.doc = doc;
        loaded.stamp = now;
        Ok(())
    }

    /// Every record's name and metadata, never a value.
    ///
    /// # Errors
    /// [`VaultError`] when the file changed and no longer verifies.
    pub fn list(&self) -> Result<Vec<SecretMeta>, VaultError> {
        let mut st = self.lock_state();
        self.refresh(&mut st)?;
        let mut v: Vec<SecretMeta> = st
            .doc
            .records
            .iter()
            .map(|r| SecretMeta {
                name: r.name.clone(),
                kind: r.kind,
                version: r.version,
                created_at_ns: r.created_at_ns,
                updated_at_ns: r.updated_at_ns,
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(v)
    }

    /// Whether `name` is set.
    ///
    /// # Errors
    /// As [`Vault::list`].
    pub fn contains(&self, name: &str) -> Result<bool, VaultError> {
        let mut st = self.lock_state();
        self.refresh(&mut st)?;
        Ok(st.doc.records.iter().any(|r| r.name == name))
    }

    /// The value of `name`, decrypted for one use, or `None`. Host-internal:
    /// no interface returns it.
    ///
    /// # Errors
    /// [`VaultError::Tampered`] when the record does not decrypt.
    pub(crate) fn get(&self, name: &str) -> Result<Option<Zeroizing<Vec<u8>>>, VaultError> {
        let mut st = self.lock_state();
        self.refresh(&mut st)?;
        let Some(r) = st.doc.records.iter().find(|r| r.name == name) else {
            return Ok(None);
        };
        decrypt_record(&self.path, &self.dek, &st.doc.vault_id, r).map(Some)
    }

    /// Checks a user secret's name and value before anything is recorded.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] saying what is wrong.
    pub fn check(name: &str, value: &[u8]) -> Result<(), VaultError> {
        if !valid_name(name) || name.starts_with("algobanana.") {
            return Err(VaultError::Invalid(format!(
                "secret name `{}`: use 1–64 lowercase letters, digits, '-', '_' or '.' (names starting with `algobanana.` are the host's own)",
                name.chars().take(80).collect::<String>()
            )));
        }
        check_value(name, value)
    }

    /// Sets `name` (a user secret) to `value`.
    ///
    /// # Errors
    /// [`VaultError::Invalid`] for a bad or reserved name or an empty value;
    /// I/O errors (the vault is then unchanged).
    pub fn set(&self, name: &str, value: &[u8]) -> Result<(SetOutcome, u64), VaultError> {
        Self::check(name, value)?;
        self.set_kind(name, value, RecordKind::Secret)
    }

    /// Sets one of the host's own records (`algobanana.*`).
    ///
    /// # Errors
    /// As [`Vault::set`].
    pub fn set_system(&self, name: &str, value: &[u8]) -> Result<(SetOutcome, u64), VaultError> {
        if !name.starts_with("algobanana.") {
            return Err(VaultError::Invalid(format!(
                "system record `{name}` must start with `algobanana.`"
            )));
        }
        self.set_kind(name, value, RecordKind::System)
    }

    fn set_kind(&self, name: &str, value: &[u8], kind: RecordKind) -> Result<(SetOutcome, u64), VaultError> {
        check_value(name, value)?;
        let mut outcome = (SetOutcome::Created, 1);
        self.write_locked(|doc| {
            let now = crate::audit::now_ns();
            let vault_id = doc.vault_id.clone();
            let (version, created) = match doc.records.iter().position(|r| r.name == name) {
                Some(i) => {
                    let old = doc.records.remove(i);
                    (old.version + 1, old.created_at_ns)
                }
                None => (1, now),
            };
            let (nonce, ciphertext) = seal(&self.dek, &record_aad(&vault_id, name, version, kind), value);
            doc.records.push(Record {
                name: name.to_owned(),
                kind,
                version,
                created_at_ns: created,
                updated_at_ns: now,
                nonce,
                ciphertext,
            });
            outcome = (
                if version == 1 {
                    SetOutcome::Created
                } else {
                    SetOutcome::Replaced
                },
                version,
            );
            Ok(())
        })?;
        Ok(outcome)
    }

    /// Deletes `name`; false when it was not set.
    ///
    /// # Errors
    /// I/O errors.
    pub fn delete(&self, name: &str) -> Result<bool, VaultError> {
        let mut found = false;
        self.write_locked(|doc| {
            let before = doc.records.len();
            doc.records.retain(|r| r.name != name);
            found = doc.records.len() != before;
            Ok(())
        })?;
        Ok(found)
    }

    /// Replaces the key slots (the DEK stays): a new passphrase, a new key
    /// file, or both. Fast; records are not touched.
    ///
    /// # Errors
    /// [`VaultError::Locked`] when `unlock` is empty; I/O errors.
    pub fn rekey(&self, unlock: &Unlock, kdf: KdfParams) -> Result<(), VaultError> {
        self.write_locked(|doc| {
            let slots = make_slots(&doc.vault_id, &self.dek, unlock, kdf)?;
            if slots.is_empty() {
                return Err(VaultError::Locked(self.path.clone()));
            }
            doc.slots = slots;
            Ok(())
        })
    }

    /// A new DEK: every record re-encrypted, new slots. A running host must
    /// restart afterwards.
    ///
    /// # Errors
    /// As [`Vault::rekey`], and [`VaultError::Tampered`] when a record does
    /// not decrypt.
    pub fn rotate(self, unlock: &Unlock, kdf: KdfParams) -> Result<Self, VaultError> {
        let new_dek: Dek = Zeroizing::new(random::<32>());
        let path = self.path.clone();
        let lock = lock_file(&path)?;
        let mut st = self.lock_state();
        self.refresh(&mut st)?;
        let mut doc = st.doc.clone();
        drop(st);
        let vault_id = doc.vault_id.clone();
        for r in &mut doc.records {
            let plain = decrypt_record(&path, &self.dek, &vault_id, r)?;
            let (nonce, ciphertext) = seal(&new_dek, &record_aad(&vault_id, &r.name, r.version, r.kind), &plain);
            r.nonce = nonce;
            r.ciphertext = ciphertext;
        }
        doc.slots = make_slots(&vault_id, &new_dek, unlock, kdf)?;
        if doc.slots.is_empty() {
            return Err(VaultError::Locked(path));
        }
        doc.generation += 1;
        doc.mac = b64(&document_mac(&new_dek, &doc));
        write_document(&path, &doc)?;
        drop(lock);
        Ok(Self {
            state: Mutex::new(Loaded {
                stamp: stamp(&path),
                doc,
            }),
            path,
            dek: new_dek,
        })
    }

    /// Read-modify-write under the file lock.
    fn write_locked(&self, f: impl FnOnce(&mut Document) -> Result<(), VaultError>) -> Result<(), VaultError> {
        let lock = lock_file(&self.path)?;
        let mut st = self.lock_state();
        if self.path.exists() {
            self.refresh(&mut st)?;
        }
        let mut doc = st.doc.clone();
        f(&mut doc)?;
        doc.generation += 1;
        doc.mac = b64(&document_mac(&self.dek, &doc));
        write_document(&self.path, &doc)?;
        st.doc = doc;
        st.stamp = stamp(&self.path);
        drop(lock);
        Ok(())
    }

    /// The key slots' kinds, for `vault status`.
    pub fn slot_kinds(&self) -> Vec<&'static str> {
        self.lock_state().doc.slots.iter().map(|s| s.kind.as_str()).collect()
    }
}

fn check_value(name: &str, value: &[u8]) -> Result<(), VaultError> {
    if value.is_empty() {
        return Err(VaultError::Invalid(format!(
            "secret `{name}`: the value is empty; pass the value on standard input"
        )));
    }
    if value.len() > 64 * 1024 {
        return Err(VaultError::Invalid(format!(
            "secret `{name}`: the value is {} bytes; the limit is 64 KiB",
            value.len()
        )));
    }
    Ok(())
}

fn decrypt_record(path: &Path, dek: &[u8; 32], vault_id: &str, r: &Record) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    open_sealed(
        dek,
        &record_aad(vault_id, &r.name, r.version, r.kind),
        &r.nonce,
        &r.ciphertext,
    )
    .ok_or_else(|| VaultError::Tampered {
        path: path.to_owned(),
        detail: format!("record `{}` does not decrypt", r.name),
    })
}

fn make_slots(vault_id: &str, dek: &[u8; 32], unlock: &Unlock, kdf: KdfParams) -> Result<Vec<Slot>, VaultError> {
    let mut slots = Vec::new();
    if let Some(pass) = unlock.passphrase() {
        let salt = random::<16>();
        let kek = kek_from_passphrase(pass, &salt, kdf)?;
        let (nonce, wrapped) = seal(&kek, &slot_aad(vault_id, SlotKind::Passphrase), dek);
        slots.push(Slot {
            kind: SlotKind::Passphrase,
            kdf: Some(kdf),
            salt: b64(&salt),
            nonce,
            wrapped,
        });
    }
    if let Some(kek) = unlock.key_file_key()? {
        let (nonce, wrapped) = seal(&kek, &slot_aad(vault_id, SlotKind::KeyFile), dek);
        slots.push(Slot {
            kind: SlotKind::KeyFile,
            kdf: None,
            salt: String::new(),
            nonce,
            wrapped,
        });
    }
    Ok(slots)
}

fn unwrap_dek(path: &Path, doc: &Document, unlock: &Unlock) -> Result<Dek, VaultError> {
    if unlock.is_empty() {
        return Err(VaultError::Locked(path.to_owned()));
    }
    let mut tried = Vec::new();
    if let Some(kek) = unlock.key_file_key()? {
        tried.push(format!("key file {}", unlock.key_file_display()));
        for s in doc.slots.iter().filter(|s| s.kind == SlotKind::KeyFile) {
            if let Some(dek) = open_sealed(&kek, &slot_aad(&doc.vault_id, s.kind), &s.nonce, &s.wrapped) {
                return to_dek(path, &dek);
            }
        }
    }
    if let Some(pass) = unlock.passphrase() {
        tried.push("passphrase".to_owned());
        for s in doc.slots.iter().filter(|s| s.kind == SlotKind::Passphrase) {
            let (Some(kdf), Some(salt)) = (s.kdf, unb64(&s.salt)) else {
                continue;
            };
            let kek = kek_from_passphrase(pass, &salt, kdf)?;
            if let Some(dek) = open_sealed(&kek, &slot_aad(&doc.vault_id, s.kind), &s.nonce, &s.wrapped) {
                return to_dek(path, &dek);
            }
        }
    }
    Err(VaultError::WrongKey {
        path: path.to_owned(),
        what: tried.join(" or the "),
    })
}

fn to_dek(path: &Path, bytes: &[u8]) -> Result<Dek, VaultError> {
    let arr: [u8; 32] = bytes.try_into().map_err(|_| VaultError::Tampered {
        path: path.to_owned(),
        detail: "the wrapped data key is not 32 bytes".into(),
    })?;
    Ok(Zeroizing::new(arr))
}

fn verify_document(path: &Path, dek: &[u8; 32], doc: &Document) -> Result<(), VaultError> {
    let presented = unb64(&doc.mac).unwrap_or_default();
    if !mac_matches(dek, doc, &presented) {
        return Err(VaultError::Tampered {
            path: path.to_owned(),
            detail: "the document's authentication tag does not match".into(),
        });
    }
    let mut names = std::collections::HashSet::new();
    for r in &doc.records {
        if !names.insert(&r.name) {
            return Err(VaultError::Tampered {
                path: path.to_owned(),
                detail: format!("record `{}` appears twice", r.name),
            });
        }
        decrypt_record(path, dek, &doc.vault_id, r)?;
    }
    Ok(())
}

fn read_document(path: &Path) -> Result<Document, VaultError> {
    let bytes = std::fs::read(path).map_err(|e| VaultError::Io {
        path: path.to_owned(),
        message: format!("cannot read: {e}"),
    })?;
    let doc: Document = serde_json::from_slice(&bytes).map_err(|e| VaultError::Format {
        path: path.to_owned(),
        detail: format!("{e}; restore vault.abv from a backup (vault.abv.bak is the previous generation)"),
    })?;
    if doc.magic != MAGIC {
        return Err(VaultError::Format {
            path: path.to_owned(),
            detail: format!("magic `{}`", doc.magic.chars().take(40).collect::<String>()),
        });
    }
    if doc.format != FORMAT {
        return Err(VaultError::Format {
            path: path.to_owned(),
            detail: format!(
                "format {} (this algobanana reads format {FORMAT}); use the algobanana version that wrote it",
                doc.format
            ),
        });
    }
    Ok(doc)
}

fn io_err(path: &Path, what: &str) -> impl Fn(std::io::Error) -> VaultError {
    let path = path.to_owned();
    let what = what.to_owned();
    move |e| VaultError::Io {
        path: path.clone(),
        message: format!("{what}: {e}; the vault file was left as it was (check free space and permissions)"),
    }
}

/// Atomic replace: temp file, fsync, keep the old file as `.bak`, rename,
/// fsync the directory.
fn write_document(path: &Path, doc: &Document) -> Result<(), VaultError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::setup::create_private_dir(dir).map_err(io_err(dir, "cannot create the directory"))?;
    let tmp = path.with_extension("abv.tmp");
    let bytes = serde_json::to_vec_pretty(doc).expect("the document serialises");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(&tmp).map_err(io_err(&tmp, "cannot write"))?;
        let res = f.write_all(&bytes).and_then(|()| f.sync_all());
        if let Err(e) = res {
            drop(f);
            let _ = std::fs::remove_file(&tmp);
            return Err(io_err(&tmp, "cannot write")(e));
        }
    }
    if path.exists() {
        let bak = path.with_extension("abv.bak");
        std::fs::copy(path, &bak).map_err(io_err(&bak, "cannot keep the previous generation"))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path, "cannot replace"))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// An exclusive advisory lock on `vault.lock` beside the vault, so the CLI
/// and a running host never interleave writes.
fn lock_file(path: &Path) -> Result<std::fs::File, VaultError> {
    let lock = path.with_extension("lock");
    if let Some(dir) = lock.parent() {
        crate::setup::create_private_dir(dir).map_err(io_err(dir, "cannot create the directory"))?;
    }
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock)
        .map_err(io_err(&lock, "cannot open the lock file"))?;
    f.lock().map_err(io_err(&lock, "cannot lock"))?;
    Ok(f)
}

/// The vault must not be readable by others (it is ciphertext, but the
/// key-file slot's key often sits beside it).
fn check_permissions(path: &Path) -> Result<(), VaultError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).map_err(io_err(path, "cannot read"))?;
        if m.mode() & 0o077 != 0 {
            return Err(VaultError::Io {
                path: path.to_owned(),
                message: format!(
                    "is readable or writable by group or others (mode {:o}); run `chmod 600 {}`",
                    m.mode() & 0o777,
                    path.display()
                ),
            });
        }
    }
    let _ = path;
    Ok(())
}

#[cfg(test)]
mod tests;
