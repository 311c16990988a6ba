//! How the vault is unlocked: a passphrase (typed, from
//! `ALGOBANANA_VAULT_PASSPHRASE`, or from a file named by
//! `ALGOBANANA_VAULT_PASSPHRASE_FILE`) and/or a 32-byte key file.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use rand::RngCore as _;
use zeroize::Zeroizing;

use super::VaultError;

/// What the vault may be opened with. `Debug` never shows the passphrase.
#[derive(Default)]
pub struct Unlock {
    passphrase: Option<Zeroizing<Vec<u8>>>,
    key_file: Option<PathBuf>,
}

impl std::fmt::Debug for Unlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Unlock")
            .field("passphrase", &self.passphrase.as_ref().map(|_| "REDACTED"))
            .field("key_file", &self.key_file)
            .finish()
    }
}

impl Unlock {
    /// Nothing to unlock with.
    pub fn none() -> Self {
        Self::default()
    }

    /// A passphrase.
    #[must_use]
    pub fn with_passphrase(mut self, passphrase: impl Into<Vec<u8>>) -> Self {
        self.passphrase = Some(Zeroizing::new(passphrase.into()));
        self
    }

    /// A key file.
    #[must_use]
    pub fn with_key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.key_file = Some(path.into());
        self
    }

    /// From the usual sources: a passphrase value (the environment), a
    /// passphrase file, a key file.
    ///
    /// # Errors
    /// [`VaultError::Io`] when the passphrase file cannot be read or is
    /// empty.
    pub fn from_sources(
        passphrase: Option<String>,
        passphrase_file: Option<&Path>,
        key_file: Option<&Path>,
    ) -> Result<Self, VaultError> {
        let mut u = Self::none();
        if let Some(p) = passphrase.filter(|p| !p.is_empty()) {
            u = u.with_passphrase(p.into_bytes());
        } else if let Some(file) = passphrase_file {
            let text = Zeroizing::new(std::fs::read(file).map_err(|e| VaultError::Io {
                path: file.to_owned(),
                message: format!("cannot read the passphrase file: {e}"),
            })?);
            let trimmed = text.strip_suffix(b"\n").unwrap_or(&text);
            let trimmed = trimmed.strip_suffix(b"\r").unwrap_or(trimmed);
            if trimmed.is_empty() {
                return Err(VaultError::Io {
                    path: file.to_owned(),
                    message: "the passphrase file is empty".into(),
                });
            }
            u = u.with_passphrase(trimmed.to_vec());
        }
        if let Some(k) = key_file {
            u = u.with_key_file(k);
        }
        Ok(u)
    }

    /// True when there is nothing to unlock with.
    pub fn is_empty(&self) -> bool {
        self.passphrase.is_none() && self.key_file.is_none()
    }

    /// True when a key file is named.
    pub fn has_key_file(&self) -> bool {
        self.key_file.is_some()
    }

    /// True when a passphrase is given.
    pub fn has_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    pub(super) fn passphrase(&self) -> Option<&[u8]> {
        self.passphrase.as_deref().map(Vec::as_slice)
    }

    pub(super) fn key_file_display(&self) -> String {
        self.key_file
            .as_ref()
            .map_or_else(String::new, |p| p.display().to_string())
    }

    /// The key file's 32 bytes (64 hex characters in the file).
    pub(super) fn key_file_key(&self) -> Result<Option<Zeroizing<[u8; 32]>>, VaultError> {
        let Some(path) = &self.key_file else {
            return Ok(None);
        };
        let err = |message: String| VaultError::Io {
            path: path.clone(),
            message,
        };
        let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
            err(format!(
                "cannot read the vault key file: {e}; pass the file the vault was created with"
            ))
        })?);
        let bytes = Zeroizing::new(
            hex::decode(text.trim()).map_err(|_| err("the vault key file must hold 64 hex characters".into()))?,
        );
        let key: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| err("the vault key file must hold 32 bytes (64 hex characters)".into()))?;
        Ok(Some(Zeroizing::new(key)))
    }
}

/// Writes a new random key file (mode 0600), refusing to replace one.
///
/// # Errors
/// [`VaultError::Io`].
pub fn create_key_file(path: &Path) -> Result<(), VaultError> {
    let err = |e: std::io::Error| VaultError::Io {
        path: path.to_owned(),
        message: format!("cannot create the key file: {e}"),
    };
    if let Some(dir) = path.parent() {
        crate::setup::create_private_dir(dir).map_err(err)?;
    }
    let mut key = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(key.as_mut());
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(err)?;
    let text = Zeroizing::new(hex::encode(key.as_ref()));
    f.write_all(text.as_bytes()).map_err(err)?;
    f.write_all(b"\n").map_err(err)?;
    f.sync_all().map_err(err)
}
