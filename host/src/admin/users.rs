//! Admin users. Every token belongs to one; a disabled user's tokens stop
//! working on the next request. Local mode has only `admin` (made with the
//! state database); Cloud mode has as many as the operator adds.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::rbac::Role;
use crate::store::{StateDb, StoreError};

/// A user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// The name (1–64 of lowercase letters, digits, `-`, `_`, `.`, `@`).
    pub name: String,
    /// The role; tokens of this user hold it or a lesser one.
    pub role: Role,
    /// Created (UTC ns).
    pub created_at_ns: i64,
    /// Disabled (UTC ns), if it is.
    pub disabled_at_ns: Option<i64>,
}

/// Whether a user of `user` role may hold a token of `token` role: admins
/// any, traders trader or viewer, others only their own.
pub fn may_hold(user: Role, token: Role) -> bool {
    match user {
        Role::Admin => true,
        Role::Trader => matches!(token, Role::Trader | Role::Viewer),
        other => other == token,
    }
}

/// Valid user names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

/// Users in `state.db`.
#[derive(Debug, Clone)]
pub struct Users {
    db: StateDb,
}

impl Users {
    /// Users stored in `db`.
    pub fn new(db: StateDb) -> Self {
        Self { db }
    }

    /// Every user.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn list(&self) -> Result<Vec<User>, StoreError> {
        self.db.with(|c| {
            let mut s = c.prepare("SELECT name, role, created_at_ns, disabled_at_ns FROM app_user ORDER BY name")?;
            s.query_map([], row)?.collect()
        })
    }

    /// One user.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.db.with(|c| {
            c.query_row(
                "SELECT name, role, created_at_ns, disabled_at_ns FROM app_user WHERE name = ?1",
                [name],
                row,
            )
            .optional()
        })
    }

    /// Creates a user; false when the name is taken.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn create(&self, name: &str, role: Role) -> Result<bool, StoreError> {
        self.db.durable(|c| {
            c.execute(
                "INSERT OR IGNORE INTO app_user(name, role, created_at_ns) VALUES (?1, ?2, ?3)",
                params![name, role.as_str(), crate::audit::now_ns()],
            )
            .map(|n| n == 1)
        })
    }

    /// Changes a user's role and/or disables or enables it; tokens whose
    /// role the new user role may not hold are revoked in the same
    /// transaction. Returns the revoked token ids.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn update(&self, name: &str, role: Option<Role>, disabled: Option<bool>) -> Result<Vec<String>, StoreError> {
        self.db.durable(|tx| {
            let now = crate::audit::now_ns();
            if let Some(d) = disabled {
                tx.execute(
                    "UPDATE app_user SET disabled_at_ns = CASE WHEN ?2 THEN coalesce(disabled_at_ns, ?3) ELSE NULL END WHERE name = ?1",
                    params![name, d, now],
                )?;
            }
            let mut revoked = Vec::new();
            if let Some(r) = role {
                tx.execute("UPDATE app_user SET role = ?2 WHERE name = ?1", params![name, r.as_str()])?;
                let tokens: Vec<(String, String)> = {
                    let mut s =
                        tx.prepare("SELECT id, role FROM api_token WHERE owner = ?1 AND revoked_at_ns IS NULL")?;
                    s.query_map([name], |row| Ok((row.get(0)?, row.get(1)?)))?
                        .collect::<Result<_, _>>()?
                };
                for (id, trole) in tokens {
                    if !Role::parse(&trole).is_some_and(|t| may_hold(r, t)) {
                        tx.execute(
                            "UPDATE api_token SET revoked_at_ns = ?2 WHERE id = ?1",
                            params![id, now],
                        )?;
                        revoked.push(id);
                    }
                }
            }
            Ok(revoked)
        })
    }

    /// Enabled admins, so the last one is never disabled or demoted.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn active_admins(&self) -> Result<u64, StoreError> {
        self.db.with(|c| {
            c.query_row(
                "SELECT count(*) FROM app_user WHERE role = 'admin' AND disabled_at_ns IS NULL",
                [],
                |r| r.get(0),
            )
        })
    }
}

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        name: r.get(0)?,
        role: Role::parse(&r.get::<_, String>(1)?).unwrap_or(Role::Viewer),
        created_at_ns: r.get(2)?,
        disabled_at_ns: r.get(3)?,
    })
}
