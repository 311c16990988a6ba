//! The audit signing key: ed25519. With a vault (`DATA_DIR/vault.abv`) it
//! is a system record there, encrypted at rest; without one it is kept in
//! `DATA_DIR/keys/audit-signing.key` (mode 0600, 32 bytes of seed in hex).
//! A key file found when a vault is open moves into the vault and the file
//! is removed. Anyone who holds the key can sign checkpoints, which is why
//! `audit witness` copies checkpoint notes to a place the user keeps
//! elsewhere.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// The key file's path inside the data dir.
pub const KEY_FILE: &str = "keys/audit-signing.key";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[error("audit signing key {path}: {message}")]
pub struct KeyError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong and what to do.
    pub message: String,
}

/// The fingerprint of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// The signing key. `Debug` prints only the key id.
pub struct AuditKey {
    signing: SigningKey,
    id: String,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AuditKey({}, REDACTED)", self.id)
    }
}

impl AuditKey {
    /// A fresh random key.
    pub fn generate() -> Self {
        let mut seed = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rng(), seed.as_mut());
        Self::from_seed(&seed)
    }

    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(seed);
        let id = key_id(&signing.verifying_key());
        Self { signing, id }
    }

    /// Loads the key at `path`, creating it (0600) when it does not exist.
    ///
    /// # Errors
    /// [`KeyError`] when the file is unreadable or malformed.
    pub fn load_or_create(path: &Path) -> Result<Self, KeyError> {
        let err = |message: String| KeyError {
            path: path.to_owned(),
            message,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = Zeroizing::new(hex::decode(text.trim()).map_err(|_| {
                    err("is not 64 hex characters; restore it from your backup (checkpoints signed with it cannot be re-signed)".into())
                })?);
                let seed: [u8; 32] = bytes
                    .as_slice()
                    .try_into()
                    .map_err(|_| err("must hold exactly 32 bytes (64 hex characters)".into()))?;
                let seed = Zeroizing::new(seed);
                Ok(Self::from_seed(&seed))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = Self::generate();
                key.save(path).map_err(|e| err(format!("cannot create: {e}")))?;
                Ok(key)
            }
            Err(e) => Err(err(format!("cannot read: {e}"))),
        }
    }

    /// Writes the key to `path` with mode 0600, refusing to replace a file.
    ///
    /// # Errors
    /// I/O errors.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            crate::setup::create_private_dir(dir)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut f = opts.open(path)?;
        let text = Zeroizing::new(hex::encode(self.signing.to_bytes()));
        f.write_all(text.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    }

    /// The 32-byte seed, for the vault.
    fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The key id (fingerprint).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The public key.
    pub fn public(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> Signature {
        self.signing.sign(message)
    }
}

/// Where the signing key is kept.
#[derive(Debug, Clone)]
pub enum KeyStore {
    /// A 0600 file of 64 hex characters.
    File(PathBuf),
    /// A system record in the vault; `file` is the legacy key file, moved
    /// into the vault when found.
    Vault {
        /// The vault.
        vault: std::sync::Arc<crate::vault::Vault>,
        /// The key file a vault-less setup used.
        file: PathBuf,
    },
}

impl KeyStore {
    /// Where, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::File(p) => p.display().to_string(),
            Self::Vault { vault, .. } => format!("the vault ({})", vault.path().display()),
        }
    }

    /// Loads the key, creating it when there is none; a legacy key file is
    /// moved into the vault.
    ///
    /// # Errors
    /// [`KeyError`].
    pub fn load_or_create(&self) -> Result<AuditKey, KeyError> {
        match self {
            Self::File(p) => AuditKey::load_or_create(p),
            Self::Vault { vault, file } => {
                let err = |message: String| KeyError {
                    path: vault.path().to_owned(),
                    message,
                };
                let stored = vault
                    .get(crate::vault::AUDIT_KEY_RECORD)
                    .map_err(|e| err(e.to_string()))?;
                if let Some(bytes) = stored {
                    let seed: [u8; 32] = bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| err("the audit key record is not 32 bytes".into()))?;
                    return Ok(AuditKey::from_seed(&Zeroizing::new(seed)));
                }
                let key = if file.exists() {
                    AuditKey::load_or_create(file)?
                } else {
                    AuditKey::generate()
                };
                vault
                    .set_system(crate::vault::AUDIT_KEY_RECORD, key.seed().as_ref())
                    .map_err(|e| err(e.to_string()))?;
                if file.exists() {
                    // Now only in the vault (written and fsynced above).
                    std::fs::remove_file(file).map_err(|e| KeyError {
                        path: file.clone(),
                        message: format!("moved into the vault, but the old file cannot be removed: {e}; delete it"),
                    })?;
                }
                Ok(key)
            }
        }
    }

    /// Replaces the stored key with `new` (after a rotation checkpoint).
    ///
    /// # Errors
    /// I/O or vault errors, as text.
    pub fn replace(&self, new: &AuditKey) -> Result<(), String> {
        match self {
            Self::File(p) => {
                let tmp = p.with_extension("key.new");
                let _ = std::fs::remove_file(&tmp);
                new.save(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
                std::fs::rename(&tmp, p).map_err(|e| format!("{}: {e}", p.display()))
            }
            Self::Vault { vault, .. } => vault
                .set_system(crate::vault::AUDIT_KEY_RECORD, new.seed().as_ref())
                .map(drop)
                .map_err(|e| e.to_string()),
        }
    }
}

/// Verifies `signature` over `message` with `public` (strict: rejects
/// malleable and small-order signatures).
pub fn verify(public: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    public.verify_strict(message, &sig).is_ok() && public.verify(message, &sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_file_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(KEY_FILE);
        let a = AuditKey::load_or_create(&path).unwrap();
        let b = AuditKey::load_or_create(&path).unwrap();
        assert_eq!(a.id(), b.id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let sig = a.sign(b"note");
        assert!(verify(&b.public(), b"note", &sig.to_bytes()));
        assert!(!verify(&b.public(), b"other", &sig.to_bytes()));
        assert!(!format!("{a:?}").contains(&hex::encode(a.signing.to_bytes())));
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 §7.1, TEST 1 (empty message).
        let seed: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let key = AuditKey::from_seed(&seed);
        assert_eq!(
            hex::encode(key.public().as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            hex::encode(key.sign(b"").to_bytes()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
