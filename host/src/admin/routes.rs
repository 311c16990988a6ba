//! Hook tokens with rotation, and routes paused through the admin API.
//!
//! The config holds each route's first hook token (its SHA-256). Rotation
//! adds a new token in `state.db` and gives every older token of the route
//! an expiry at the end of the overlap window, so senders can be moved
//! over without a gap. Lookups are by SHA-256 of the presented token (a
//! 256-bit random value) in memory, then a constant-time comparison.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;

use rusqlite::params;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::domain::ids::RouteName;
use crate::store::{StateDb, StoreError};

/// One hook token's record (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HookTokenInfo {
    /// The first 12 hex digits of its SHA-256: enough to tell tokens apart.
    pub id: String,
    /// `config` (the route's `hook_token_sha256`) or `api` (a rotation).
    pub origin: String,
    /// Created (UTC ns).
    pub created_at_ns: i64,
    /// Stops working at (UTC ns), if it does.
    pub expires_at_ns: Option<i64>,
}

#[derive(Debug, Clone)]
struct Entry {
    route: RouteName,
    origin: String,
    created_at_ns: i64,
    expires_at_ns: Option<i64>,
}

/// Hook tokens and paused routes.
#[derive(Debug)]
pub struct RouteControl {
    db: StateDb,
    tokens: RwLock<HashMap<[u8; 32], Entry>>,
    paused: RwLock<HashSet<RouteName>>,
}

/// A `hook_token` row: hash, route, origin, created, expires.
type Row = (Vec<u8>, String, String, i64, Option<i64>);

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl RouteControl {
    /// Loads the tokens and pauses, registering the config's tokens (a
    /// config token that was replaced in the file stops working).
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn load(db: StateDb, config: &Config) -> Result<Self, StoreError> {
        let now = crate::audit::now_ns();
        let rows: Vec<Row> = db.durable(|tx| {
            let current: Vec<([u8; 32], &RouteName)> =
                config.routes.iter().map(|(n, r)| (r.hook_token_sha256, n)).collect();
            // Config tokens no longer in the config are forgotten.
            let stored: Vec<(Vec<u8>, String)> = {
                let mut s = tx.prepare("SELECT hash, route FROM hook_token WHERE origin = 'config'")?;
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            for (hash, route) in stored {
                if !current
                    .iter()
                    .any(|(h, n)| h.as_slice() == hash.as_slice() && n.as_str() == route)
                {
                    tx.execute("DELETE FROM hook_token WHERE hash = ?1", [&hash])?;
                }
            }
            for (hash, route) in &current {
                tx.execute(
                    "INSERT OR IGNORE INTO hook_token(hash, route, origin, created_at_ns) VALUES (?1, ?2, 'config', ?3)",
                    params![hash.as_slice(), route.as_str(), now],
                )?;
            }
            // Routes removed from the config lose their rotated tokens too.
            let names: Vec<String> = config.routes.keys().map(|n| n.as_str().to_owned()).collect();
            let all: Vec<String> = {
                let mut s = tx.prepare("SELECT DISTINCT route FROM hook_token")?;
                s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>()?
            };
            for r in all.iter().filter(|r| !names.contains(r)) {
                tx.execute("DELETE FROM hook_token WHERE route = ?1", [r])?;
            }
            let mut s = tx.prepare("SELECT hash, route, origin, created_at_ns, expires_at_ns FROM hook_token")?;
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect()
        })?;
        let mut tokens = HashMap::new();
        for (hash, route, origin, created_at_ns, expires_at_ns) in rows {
            let (Ok(h), Ok(route)) = (<[u8; 32]>::try_from(hash.as_slice()), RouteName::new(route)) else {
                continue;
            };
            tokens.insert(
                h,
                Entry {
                    route,
                    origin,
                    created_at_ns,
                    expires_at_ns,
                },
            );
        }
        let paused: Vec<String> = db.with(|c| {
            let mut s = c.prepare("SELECT route FROM route_state WHERE paused = 1")?;
            s.query_map([], |r| r.get(0))?.collect()
        })?;
        Ok(Self {
            db,
            tokens: RwLock::new(tokens),
            paused: RwLock::new(paused.into_iter().filter_map(|r| RouteName::new(r).ok()).collect()),
        })
    }

    /// The route a presented hook token opens, if it is current.
    pub fn lookup(&self, token: &str) -> Option<RouteName> {
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let tokens = self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let (stored, e) = tokens.get_key_value(&hash)?;
        if !constant_time_eq(stored, &hash) {
            return None;
        }
        if e.expires_at_ns.is_some_and(|x| x <= crate::audit::now_ns()) {
            return None;
        }
        Some(e.route.clone())
    }

    /// A new hook token for `route`; every older one expires `overlap_ns`
    /// from now (or sooner if it already would). Returns the token (shown
    /// once) and its record.
    ///
    /// # Errors
    /// [`StoreError`]; nothing changes then.
    pub fn rotate(&self, route: &RouteName, overlap_ns: i64) -> Result<(String, HookTokenInfo), StoreError> {
        let token = crate::setup::new_hook_token();
        let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = crate::audit::now_ns();
        let until = now.saturating_add(overlap_ns);
        let mut tokens = self.tokens.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.db.durable(|tx| {
            tx.execute(
                "UPDATE hook_token SET expires_at_ns = min(coalesce(expires_at_ns, ?2), ?2) WHERE route = ?1",
                params![route.as_str(), until],
            )?;
            tx.execute(
                "INSERT INTO hook_token(hash, route, origin, created_at_ns) VALUES (?1, ?2, 'api', ?3)",
                params![hash.as_slice(), route.as_str(), now],
            )
            .map(drop)
        })?;
        for e in tokens.values_mut().filter(|e| &e.route == route) {
            e.expires_at_ns = Some(e.expires_at_ns.map_or(until, |x| x.min(until)));
        }
        tokens.insert(
            hash,
            Entry {
                route: route.clone(),
                origin: "api".into(),
                created_at_ns: now,
                expires_at_ns: None,
            },
        );
        Ok((
            token,
            HookTokenInfo {
                id: hex::encode(&hash[..6]),
                origin: "api".into(),
                created_at_ns: now,
                expires_at_ns: None,
            },
        ))
    }

    /// The route's tokens, newest first (expired ones included, marked).
    pub fn tokens_of(&self, route: &RouteName) -> Vec<HookTokenInfo> {
        let tokens = self.tokens.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<HookTokenInfo> = tokens
            .iter()
            .filter(|(_, e)| &e.route == route)
            .map(|(h, e)| HookTokenInfo {
                id: hex::encode(&h[..6]),
                origin: e.origin.clone(),
                created_at_ns: e.created_at_ns,
                expires_at_ns: e.expires_at_ns,
            })
            .collect();
        v.sort_by_key(|t| std::cmp::Reverse(t.created_at_ns));
        v
    }

    /// Whether `route` is paused.
    pub fn is_paused(&self, route: &RouteName) -> bool {
        self.paused
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(route)
    }

    /// Pauses or resumes `route`; returns the previous state.
    ///
    /// # Errors
    /// [`StoreError`].
    pub fn set_paused(&self, route: &RouteName, paused: bool, by: &str) -> Result<bool, StoreError> {
        let mut set = self.paused.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        self.db.durable(|c| {
            c.execute(
                "INSERT INTO route_state(route, paused, changed_by, changed_at_ns) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(route) DO UPDATE SET paused = excluded.paused, changed_by = excluded.changed_by, changed_at_ns = excluded.changed_at_ns",
                params![route.as_str(), paused, by, crate::audit::now_ns()],
            )
            .map(drop)
        })?;
        Ok(if paused {
            !set.insert(route.clone())
        } else {
            set.remove(route)
        })
    }
}
