//! Admin API tokens: `abk_<id>_<secret>` with a 26-character id and 256
//! random bits of secret; only the SHA-256 of the whole token is stored.
//! Each has a role, an optional expiry, can be revoked with immediate effect
//! (every request re-reads the row), and records its last use.

use base64::Engine as _;
use rand::RngCore as _;
use rusqlite::{OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::rbac::Role;
use crate::store::{StateDb, StoreError};

/// The token prefix.
pub const PREFIX: &str = "abk_";

/// A stored token (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TokenInfo {
    /// Its id (the part after `abk_`, before `_`).
    pub id: String,
    /// Who or what it is for.
    pub name: String,
    /// The user it belongs to.
    pub owner: String,
    /// Its role.
    pub role: Role,
    /// Created (UTC ns).
    pub created_at_ns: i64,
    /// Expires (UTC ns), if it does.
    pub expires_at_ns: Option<i64>,
    /// Revoked (UTC ns), if it was.
    pub revoked_at_ns: Option<i64>,
    /// Last successful use (UTC ns).
    pub last_used_at_ns: Option<i64>,
}

/// Why a presented token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not an `abk_` token, or no such id, or the secret does not match.
    Unknown,
    /// Past its expiry.
    Expired,
    /// Revoked.
    Revoked,
    /// Its user is disabled.
    Disabled,
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Admin tokens in `state.db`.
#[derive(Debug, Clone)]
pub struct Tokens {
    db: StateDb,
}

impl Tokens {
    /// Tokens stored in `db`.
    pub fn new(db: StateDb) -> Self {
        Self { db }
    }

    /// Creates a token; returns it (shown once) and its record.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn create(
        &self,
        name: &str,
        owner: &str,
        role: Role,
        expires_at_ns: Option<i64>,
    ) -> Result<(String, TokenInfo), StoreError> {
        let mut id_bytes = [0u8; 13];
        rand::rng().fill_bytes(&mut id_bytes);
        let id = hex::encode(id_bytes);
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let token = format!(
            "{PREFIX}{id}_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let now = crate::audit::now_ns();
        self.db.durable(|c| {
            c.execute(
                "INSERT INTO api_token(id, hash, name, role, created_at_ns, expires_at_ns, owner) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, hash(&token).to_vec(), name, role.as_str(), now, expires_at_ns, owner],
            )
            .map(drop)
        })?;
        let info = TokenInfo {
            id,
            name: name.to_owned(),
            owner: owner.to_owned(),
            role,
            created_at_ns: now,
            expires_at_ns,
            revoked_at_ns: None,
            last_used_at_ns: None,
        };
        Ok((token, info))
    }

    /// Checks a presented token; records its use when valid.
    ///
    /// # Errors
    /// [`StoreError`] (the request then fails closed).
    pub fn authenticate(&self, presented: &str) -> Result<Result<TokenInfo, Refusal>, StoreError> {
        let Some(rest) = presented.strip_prefix(PREFIX) else {
            return Ok(Err(Refusal::Unknown));
        };
        let Some((id, _)) = rest.split_once('_') else {
            return Ok(Err(Refusal::Unknown));
        };
        let Some((stored, info)) = self.get_with_hash(id)? else {
            return Ok(Err(Refusal::Unknown));
        };
        if !constant_time_eq(&stored, &hash(presented)) {
            return Ok(Err(Refusal::Unknown));
        }
        let now = crate::audit::now_ns();
        if info.revoked_at_ns.is_some() {
            return Ok(Err(Refusal::Revoked));
        }
        if info.expires_at_ns.is_some_and(|e| e <= now) {
            return Ok(Err(Refusal::Expired));
        }
        let disabled: Option<Option<i64>> = self.db.with(|c| {
            c.query_row(
                "SELECT disabled_at_ns FROM app_user WHERE name = ?1",
                [&info.owner],
                |r| r.get(0),
            )
            .optional()
        })?;
        if !matches!(disabled, Some(None)) {
            return Ok(Err(Refusal::Disabled));
        }
        self.db.with_tx(|c| {
            c.execute(
                "UPDATE api_token SET last_used_at_ns = ?1 WHERE id = ?2",
                params![now, info.id],
            )
            .map(drop)
        })?;
        Ok(Ok(info))
    }

    fn get_with_hash(&self, id: &str) -> Result<Option<(Vec<u8>, TokenInfo)>, StoreError> {
        self.db.with(|c| {
            c.query_row(
                "SELECT hash, id, name, role, created_at_ns, expires_at_ns, revoked_at_ns, last_used_at_ns, owner FROM api_token WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, info(r, 1)?)),
            )
            .optional()
        })
    }

    /// Every token, or those of one user.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn list(&self, owner: Option<&str>) -> Result<Vec<TokenInfo>, StoreError> {
        self.db.with(|c| {
            let mut s = c.prepare(
                "SELECT id, name, role, created_at_ns, expires_at_ns, revoked_at_ns, last_used_at_ns, owner FROM api_token WHERE ?1 IS NULL OR owner = ?1 ORDER BY created_at_ns",
            )?;
            s.query_map([owner], |r| info(r, 0))?.collect()
        })
    }

    /// One token's record.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn get(&self, id: &str) -> Result<Option<TokenInfo>, StoreError> {
        Ok(self.get_with_hash(id)?.map(|(_, i)| i))
    }

    /// Revokes `id`; returns false when there is no such token.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn revoke(&self, id: &str) -> Result<bool, StoreError> {
        self.db.durable(|c| {
            c.execute(
                "UPDATE api_token SET revoked_at_ns = coalesce(revoked_at_ns, ?1) WHERE id = ?2",
                params![crate::audit::now_ns(), id],
            )
            .map(|n| n > 0)
        })
    }
}

fn info(r: &rusqlite::Row<'_>, o: usize) -> rusqlite::Result<TokenInfo> {
    Ok(TokenInfo {
        id: r.get(o)?,
        name: r.get(o + 1)?,
        role: Role::parse(&r.get::<_, String>(o + 2)?).unwrap_or(Role::Viewer),
        created_at_ns: r.get(o + 3)?,
        expires_at_ns: r.get(o + 4)?,
        revoked_at_ns: r.get(o + 5)?,
        last_used_at_ns: r.get(o + 6)?,
        owner: r.get(o + 7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_authenticate_expire_and_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::new(StateDb::open(&dir.path().join("state.db")).unwrap());
        let (token, info) = t.create("ops", "admin", Role::Admin, None).unwrap();
        assert!(token.starts_with("abk_"));
        assert!(token.len() >= 4 + 26 + 1 + 43, "≥128 bits: {token}");
        assert_eq!(t.authenticate(&token).unwrap().unwrap().id, info.id);
        let mut wrong = token.clone();
        wrong.pop();
        assert_eq!(t.authenticate(&wrong).unwrap(), Err(Refusal::Unknown));
        assert_eq!(t.authenticate("abk_nope_x").unwrap(), Err(Refusal::Unknown));
        assert!(t.revoke(&info.id).unwrap());
        assert_eq!(t.authenticate(&token).unwrap(), Err(Refusal::Revoked));
        let (old, _) = t.create("old", "admin", Role::Viewer, Some(1)).unwrap();
        assert_eq!(t.authenticate(&old).unwrap(), Err(Refusal::Expired));
        // Only hashes are stored.
        let raw = std::fs::read(dir.path().join("state.db")).unwrap();
        // The secret is URL-safe base64 and may hold `_` itself: split after
        // the (hex) id, not at the last `_`, or a short tail could match
        // random bytes of the file.
        let secret = token
            .strip_prefix(PREFIX)
            .unwrap()
            .split_once('_')
            .unwrap()
            .1
            .as_bytes();
        assert_eq!(secret.len(), 43);
        assert!(!raw.windows(secret.len()).any(|w| w == secret));
    }
}
