//! `algobanana:plugin/secrets`: secrets as opaque handles. A plugin opens a
//! handle by a name its grant lists; the host uses the value on its behalf
//! (an outbound header, see [`super::http`], or a signature). No function
//! returns a value, and every use is audited (`secret.used`, committed
//! before the signature is returned or the request leaves) with the
//! secret's name, never its value.
//!
//! Handles are small integers private to one call (an index into the
//! call's table), not WIT resources: a call cannot reach another call's
//! table, and a handle that was never opened is `invalid-argument`.

use std::collections::HashMap;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde_json::json;
use zeroize::Zeroizing;

use super::CapabilityError;
use crate::audit::{ActorKind, AuditEvent, Outcome, action};
use crate::config::SecretSource;
use crate::plugins::bindings::secrets::{self, SecretHandle, SignAlgorithm};
use crate::plugins::state::PluginState;

/// Signatures per call.
pub const MAX_SIGNATURES_PER_CALL: u32 = 16;
/// Bytes signed per signature.
pub const MAX_SIGN_BYTES: usize = 64 * 1024;

/// Where secret values come from. The vault (issue 5) implements this
/// too; until then [`ConfigSecrets`] reads the config and environment.
pub trait SecretStore: Send + Sync + std::fmt::Debug {
    /// The value of `name`, or why it is unavailable (never the value).
    ///
    /// # Errors
    /// A message naming the secret and what to do.
    fn value(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, String>;

    /// The hosts `name` may be sent to in a header; `None` for any host
    /// the plugin's `http` grant reaches.
    fn hosts(&self, name: &str) -> Option<Vec<String>>;
}

/// Secrets from `[secrets.NAME]` in the config: `env` read at each use, or
/// `value` from the file.
#[derive(Debug, Default)]
pub struct ConfigSecrets {
    sources: HashMap<String, (SecretSource, Option<Vec<String>>)>,
    vault: Option<Arc<crate::vault::Vault>>,
}

impl ConfigSecrets {
    /// From the config's `[secrets]` table.
    pub fn new(sources: impl IntoIterator<Item = (String, (SecretSource, Option<Vec<String>>))>) -> Self {
        Self {
            sources: sources.into_iter().collect(),
            vault: None,
        }
    }

    /// With the unlocked vault for `vault = true` secrets.
    #[must_use]
    pub fn with_vault(mut self, vault: Option<Arc<crate::vault::Vault>>) -> Self {
        self.vault = vault;
        self
    }
}

impl SecretStore for ConfigSecrets {
    fn value(&self, name: &str) -> Result<Zeroizing<Vec<u8>>, String> {
        match self.sources.get(name).map(|s| &s.0) {
            None => Err(format!("secret `{name}` is not defined in [secrets]")),
            Some(SecretSource::Value(v)) => {
                use secrecy::ExposeSecret as _;
                Ok(Zeroizing::new(v.expose_secret().as_bytes().to_vec()))
            }
            Some(SecretSource::Vault) => match &self.vault {
                None => Err(format!(
                    "secret `{name}` is in the vault, but no vault is open; create one with `algobanana vault init`"
                )),
                Some(v) => match v.get(name) {
                    Ok(Some(value)) => Ok(value),
                    Ok(None) => Err(format!(
                        "secret `{name}` is not in the vault; set it with `algobanana secret set {name}`"
                    )),
                    Err(e) => Err(e.to_string()),
                },
            },
            Some(SecretSource::Env(var)) => match std::env::var_os(var) {
                Some(v) if !v.is_empty() => Ok(Zeroizing::new(v.into_encoded_bytes())),
                _ => Err(format!(
                    "secret `{name}`: the environment variable {var} is not set; set it for the algobanana process"
                )),
            },
        }
    }

    fn hosts(&self, name: &str) -> Option<Vec<String>> {
        self.sources.get(name).and_then(|s| s.1.clone())
    }
}

/// Per-call secrets state.
#[derive(Debug)]
pub struct SecretsState {
    granted: Arc<[String]>,
    store: Arc<dyn SecretStore>,
    handles: Vec<String>,
    signatures: u32,
}

impl SecretsState {
    /// A fresh state for one call.
    pub fn new(granted: Arc<[String]>, store: Arc<dyn SecretStore>) -> Self {
        Self {
            granted,
            store,
            handles: Vec::new(),
            signatures: 0,
        }
    }

    /// The secret name behind `handle`.
    ///
    /// # Errors
    /// `invalid-argument` for a handle this call never opened.
    pub fn name(&self, handle: SecretHandle) -> Result<&str, CapabilityError> {
        usize::try_from(handle)
            .ok()
            .and_then(|i| self.handles.get(i))
            .map(String::as_str)
            .ok_or_else(|| {
                CapabilityError::InvalidArgument(format!("secret handle {handle} was not opened in this call"))
            })
    }

    /// The hosts the secret behind `handle` may go to (`None`: any granted).
    pub fn hosts(&self, handle: SecretHandle) -> Option<Vec<String>> {
        self.name(handle).ok().and_then(|n| self.store.hosts(n))
    }

    /// The hosts secret `name` may go to (`None`: any granted).
    pub fn store_hosts(&self, name: &str) -> Option<Vec<String>> {
        self.store.hosts(name)
    }

    /// The value behind `handle`, for the host's own use.
    ///
    /// # Errors
    /// An unknown handle, or the store cannot provide the value.
    pub fn value(&self, handle: SecretHandle) -> Result<Zeroizing<Vec<u8>>, CapabilityError> {
        let name = self.name(handle)?;
        self.store.value(name).map_err(CapabilityError::Unavailable)
    }
}

fn algorithm_name(a: SignAlgorithm) -> &'static str {
    match a {
        SignAlgorithm::HmacSha256 => "hmac-sha256",
        SignAlgorithm::HmacSha512 => "hmac-sha512",
        SignAlgorithm::Ed25519 => "ed25519",
    }
}

/// Signs `data` with `key` (the secret's bytes).
///
/// # Errors
/// `invalid-argument` when an ed25519 secret is not a 32-byte seed.
pub fn sign(algorithm: SignAlgorithm, key: &[u8], data: &[u8]) -> Result<Vec<u8>, CapabilityError> {
    Ok(match algorithm {
        SignAlgorithm::HmacSha256 => {
            let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key)
                .map_err(|e| CapabilityError::InvalidArgument(e.to_string()))?;
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        SignAlgorithm::HmacSha512 => {
            let mut mac = Hmac::<sha2::Sha512>::new_from_slice(key)
                .map_err(|e| CapabilityError::InvalidArgument(e.to_string()))?;
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        SignAlgorithm::Ed25519 => {
            use base64::Engine as _;
            let text = String::from_utf8_lossy(key);
            let text = text.trim();
            let seed = Zeroizing::new(
                hex::decode(text)
                    .ok()
                    .or_else(|| base64::engine::general_purpose::STANDARD.decode(text).ok())
                    .filter(|s| s.len() == 32)
                    .or_else(|| (key.len() == 32).then(|| key.to_vec()))
                    .ok_or_else(|| {
                        CapabilityError::InvalidArgument(
                            "this secret is not an ed25519 key (32-byte seed, hex or base64)".into(),
                        )
                    })?,
            );
            let seed: [u8; 32] = seed.as_slice().try_into().unwrap_or([0; 32]);
            let key = ed25519_dalek::SigningKey::from_bytes(&seed);
            use ed25519_dalek::Signer as _;
            key.sign(data).to_bytes().to_vec()
        }
    })
}

impl secrets::Host for PluginState {
    fn open(&mut self, name: String) -> wasmtime::Result<Result<SecretHandle, WitError>> {
        super::lower(self.secret_open(name))
    }

    async fn sign(
        &mut self,
        secret: SecretHandle,
        algorithm: SignAlgorithm,
        data: Vec<u8>,
    ) -> wasmtime::Result<Result<Vec<u8>, WitError>> {
        super::lower(self.secret_sign(secret, algorithm, data).await)
    }
}

type WitError = crate::plugins::bindings::types::CapabilityError;

impl PluginState {
    fn secret_open(&mut self, name: String) -> Result<SecretHandle, CapabilityError> {
        if !self.secrets.granted.contains(&name) {
            let reason = format!(
                "secret `{}` is not granted to this plugin; the operator lists granted secrets in [plugins.{}.grant] secrets",
                name.chars().take(64).collect::<String>(),
                self.log.plugin
            );
            self.deny(
                "secrets.open",
                &reason,
                json!({ "secret": name.chars().take(64).collect::<String>() }),
            );
            return Err(CapabilityError::Denied(reason));
        }
        if let Some(i) = self.secrets.handles.iter().position(|h| *h == name) {
            return Ok(SecretHandle::try_from(i).unwrap_or(u32::MAX));
        }
        self.secrets.handles.push(name);
        Ok(SecretHandle::try_from(self.secrets.handles.len() - 1).unwrap_or(u32::MAX))
    }

    async fn secret_sign(
        &mut self,
        secret: SecretHandle,
        algorithm: SignAlgorithm,
        data: Vec<u8>,
    ) -> Result<Vec<u8>, CapabilityError> {
        let name = self.secrets.name(secret)?.to_owned();
        if self.secrets.signatures >= MAX_SIGNATURES_PER_CALL {
            let reason = format!("at most {MAX_SIGNATURES_PER_CALL} signatures per call");
            self.deny(
                "secrets.sign",
                &reason,
                json!({ "secret": name, "limit": MAX_SIGNATURES_PER_CALL }),
            );
            return Err(CapabilityError::QuotaExceeded(reason));
        }
        if data.len() > MAX_SIGN_BYTES {
            return Err(CapabilityError::QuotaExceeded(format!(
                "{} bytes to sign is over the {MAX_SIGN_BYTES}-byte limit",
                data.len()
            )));
        }
        self.secrets.signatures += 1;
        let key = self.secrets.value(secret)?;
        let signature = sign(algorithm, &key, &data)?;
        drop(key);
        // Audit before the signature leaves the host.
        self.record(
            AuditEvent::new(ActorKind::Plugin, self.actor(), action::SECRET_USED, Outcome::Success)
                .resource(format!("secret:{name}"))
                .payload(json!({
                    "secret": name, "purpose": "sign", "algorithm": algorithm_name(algorithm),
                    "bytes": data.len(),
                })),
        )
        .await?;
        Ok(signature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test case 2 ("Jefe" / "what do ya want for nothing?").
    #[test]
    fn hmac_matches_rfc_4231() {
        let data = b"what do ya want for nothing?";
        assert_eq!(
            hex::encode(sign(SignAlgorithm::HmacSha256, b"Jefe", data).unwrap()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex::encode(sign(SignAlgorithm::HmacSha512, b"Jefe", data).unwrap()),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        // Test case 1: key = 0x0b * 20, "Hi There".
        assert_eq!(
            hex::encode(sign(SignAlgorithm::HmacSha256, &[0x0b; 20], b"Hi There").unwrap()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
    }

    /// RFC 8032 §7.1 test 1 (empty message).
    #[test]
    fn ed25519_matches_rfc_8032() {
        let seed = b"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60";
        assert_eq!(
            hex::encode(sign(SignAlgorithm::Ed25519, seed, b"").unwrap()),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(sign(SignAlgorithm::Ed25519, b"not a key", b"").is_err());
    }

    /// Binance's documented example: HMAC-SHA256 of the query string.
    #[test]
    fn binance_example_signature() {
        let key = b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
        let query = b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        assert_eq!(
            hex::encode(sign(SignAlgorithm::HmacSha256, key, query).unwrap()),
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
    }
}
