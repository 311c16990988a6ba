//! `algobanana:plugin/kv`: a private, persistent key-value namespace per
//! plugin, in `state.db`. Writes are buffered in the call's [`KvState`] and
//! committed in one transaction only when the call returns normally; a trap
//! or deadline discards them.

use std::collections::BTreeMap;

use serde::Serialize;

use super::CapabilityError;
use crate::plugins::bindings::kv;
use crate::plugins::state::PluginState;
use crate::store::StateDb;

/// Quotas of one plugin's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuotas {
    /// Longest key in bytes.
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    pub max_value_bytes: usize,
    /// Most keys in the namespace.
    pub max_keys: u64,
    /// Most bytes (keys plus values) in the namespace.
    pub max_total_bytes: u64,
    /// Most kv operations in one call.
    pub max_ops_per_call: u32,
}

impl Default for KvQuotas {
    fn default() -> Self {
        Self {
            max_key_bytes: 256,
            max_value_bytes: 64 * 1024,
            max_keys: 1000,
            max_total_bytes: 4 << 20,
            max_ops_per_call: 256,
        }
    }
}

/// 1,000: the most keys `list-keys` returns.
pub const MAX_LIST: usize = 1000;

/// What a call did with its namespace, for the audit row.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct KvSummary {
    /// `get` and `list-keys` calls.
    pub reads: u32,
    /// `set` and `delete` calls.
    pub writes: u32,
    /// Keys with buffered changes.
    pub keys_changed: Vec<String>,
    /// Refusals (quota or argument), in order.
    pub refused: Vec<String>,
}

/// Per-call kv state.
#[derive(Debug)]
pub struct KvState {
    plugin: String,
    db: StateDb,
    quotas: KvQuotas,
    pending: BTreeMap<String, Option<Vec<u8>>>,
    /// Stored size (key + value) of each pending key before this call.
    original: BTreeMap<String, Option<u64>>,
    base: Option<crate::store::KvUsage>,
    ops: u32,
    /// What the call did.
    pub summary: KvSummary,
}

impl KvState {
    /// A fresh state for one call of `plugin`.
    pub fn new(plugin: String, db: StateDb, quotas: KvQuotas) -> Self {
        Self {
            plugin,
            db,
            quotas,
            pending: BTreeMap::new(),
            original: BTreeMap::new(),
            base: None,
            ops: 0,
            summary: KvSummary::default(),
        }
    }

    /// Returns true if and only if the call buffered any change.
    pub fn has_writes(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Commits the buffered writes in one transaction.
    ///
    /// # Errors
    /// The database error; nothing is applied then.
    pub fn commit(&self) -> Result<(), crate::store::StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.db.kv_commit(&self.plugin, self.pending.iter())
    }

    fn refuse(&mut self, e: CapabilityError) -> CapabilityError {
        self.summary.refused.push(e.to_string());
        e
    }

    fn count_op(&mut self) -> Result<(), CapabilityError> {
        self.ops += 1;
        if self.ops > self.quotas.max_ops_per_call {
            let e = CapabilityError::QuotaExceeded(format!(
                "more than {} kv operations in one call (kv.max_ops_per_call)",
                self.quotas.max_ops_per_call
            ));
            return Err(self.refuse(e));
        }
        Ok(())
    }

    fn check_key(&mut self, key: &str) -> Result<(), CapabilityError> {
        if key.is_empty() || key.len() > self.quotas.max_key_bytes {
            let e = CapabilityError::InvalidArgument(format!(
                "kv keys must be 1 to {} bytes, got {} (kv.max_key_bytes)",
                self.quotas.max_key_bytes,
                key.len()
            ));
            return Err(self.refuse(e));
        }
        Ok(())
    }

    fn unavailable(&mut self, e: crate::store::StoreError) -> CapabilityError {
        tracing::error!(error = %e, plugin = %self.plugin, "kv read failed");
        self.refuse(CapabilityError::Unavailable(
            "the host's state database could not be read".into(),
        ))
    }

    /// Reads `key`, seeing this call's own writes.
    ///
    /// # Errors
    /// Quota, argument or availability errors.
    pub fn get(&mut self, key: &str) -> Result<Option<Vec<u8>>, CapabilityError> {
        self.count_op()?;
        self.check_key(key)?;
        self.summary.reads += 1;
        if let Some(v) = self.pending.get(key) {
            return Ok(v.clone());
        }
        self.db.kv_get(&self.plugin, key).map_err(|e| self.unavailable(e))
    }

    fn stored_size(&mut self, key: &str) -> Result<Option<u64>, CapabilityError> {
        if let Some(s) = self.original.get(key) {
            return Ok(*s);
        }
        let size = self
            .db
            .kv_get(&self.plugin, key)
            .map_err(|e| self.unavailable(e))?
            .map(|v| (key.len() + v.len()) as u64);
        self.original.insert(key.to_owned(), size);
        Ok(size)
    }

    /// Usage after the pending writes, if `key` were set to `new_size` bytes
    /// of value (or deleted, for none).
    fn projected(&mut self, key: &str, new_size: Option<u64>) -> Result<(u64, u64), CapabilityError> {
        if self.base.is_none() {
            self.base = Some(self.db.kv_usage(&self.plugin).map_err(|e| self.unavailable(e))?);
        }
        let base = self.base.unwrap_or_default();
        self.stored_size(key)?;
        let (mut keys, mut bytes) = (i128::from(base.keys), i128::from(base.bytes));
        let mut apply = |k: &str, orig: Option<u64>, now: Option<u64>| {
            let _ = k;
            keys += i128::from(now.is_some()) - i128::from(orig.is_some());
            bytes += i128::from(now.unwrap_or(0)) - i128::from(orig.unwrap_or(0));
        };
        for (k, v) in &self.pending {
            if k != key {
                let orig = self.original.get(k).copied().flatten();
                apply(k, orig, v.as_ref().map(|v| (k.len() + v.len()) as u64));
            }
        }
        let orig = self.original.get(key).copied().flatten();
        apply(key, orig, new_size.map(|n| key.len() as u64 + n));
        Ok((
            u64::try_from(keys.max(0)).unwrap_or(0),
            u64::try_from(bytes.max(0)).unwrap_or(0),
        ))
    }

    /// Buffers `key = value`.
    ///
    /// # Errors
    /// Quota, argument or availability errors.
    pub fn set(&mut self, key: &str, value: Vec<u8>) -> Result<(), CapabilityError> {
        self.count_op()?;
        self.check_key(key)?;
        if value.len() > self.quotas.max_value_bytes {
            let e = CapabilityError::QuotaExceeded(format!(
                "kv value of {} bytes is above the {}-byte cap (kv.max_value_bytes)",
                value.len(),
                self.quotas.max_value_bytes
            ));
            return Err(self.refuse(e));
        }
        let (keys, bytes) = self.projected(key, Some(value.len() as u64))?;
        if keys > self.quotas.max_keys {
            let e = CapabilityError::QuotaExceeded(format!(
                "kv namespace would hold {keys} keys; the cap is {} (kv.max_keys; the operator sets kv_max_keys in the plugin's grant)",
                self.quotas.max_keys
            ));
            return Err(self.refuse(e));
        }
        if bytes > self.quotas.max_total_bytes {
            let e = CapabilityError::QuotaExceeded(format!(
                "kv namespace would hold {bytes} bytes; the cap is {} (kv.max_total_bytes; the operator sets kv_max_bytes in the plugin's grant)",
                self.quotas.max_total_bytes
            ));
            return Err(self.refuse(e));
        }
        self.summary.writes += 1;
        if !self.summary.keys_changed.iter().any(|k| k == key) && self.summary.keys_changed.len() < 64 {
            self.summary.keys_changed.push(key.to_owned());
        }
        self.pending.insert(key.to_owned(), Some(value));
        Ok(())
    }

    /// Buffers the removal of `key`.
    ///
    /// # Errors
    /// Quota, argument or availability errors.
    pub fn delete(&mut self, key: &str) -> Result<(), CapabilityError> {
        self.count_op()?;
        self.check_key(key)?;
        self.stored_size(key)?;
        self.summary.writes += 1;
        if !self.summary.keys_changed.iter().any(|k| k == key) && self.summary.keys_changed.len() < 64 {
            self.summary.keys_changed.push(key.to_owned());
        }
        self.pending.insert(key.to_owned(), None);
        Ok(())
    }

    /// Keys starting with `prefix`, sorted, including this call's writes.
    ///
    /// # Errors
    /// Quota or availability errors.
    pub fn list_keys(&mut self, prefix: &str) -> Result<Vec<String>, CapabilityError> {
        self.count_op()?;
        self.summary.reads += 1;
        let stored = self
            .db
            .kv_keys(&self.plugin, prefix, MAX_LIST + self.pending.len())
            .map_err(|e| self.unavailable(e))?;
        let mut keys: std::collections::BTreeSet<String> = stored.into_iter().collect();
        for (k, v) in &self.pending {
            if k.starts_with(prefix) {
                if v.is_some() {
                    keys.insert(k.clone());
                } else {
                    keys.remove(k);
                }
            }
        }
        Ok(keys.into_iter().take(MAX_LIST).collect())
    }
}

impl kv::Host for PluginState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, CapabilityError> {
        self.kv.get(&key)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), CapabilityError> {
        self.kv.set(&key, value)
    }

    fn delete(&mut self, key: String) -> Result<(), CapabilityError> {
        self.kv.delete(&key)
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, CapabilityError> {
        self.kv.list_keys(&prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(quotas: KvQuotas) -> (tempfile::TempDir, KvState) {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::open(&dir.path().join("state.db")).unwrap();
        (dir, KvState::new("p".into(), db, quotas))
    }

    #[test]
    fn writes_are_visible_in_the_call_and_committed_atomically() {
        let (_d, mut s) = state(KvQuotas::default());
        s.set("a", b"1".to_vec()).unwrap();
        assert_eq!(s.get("a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(
            s.db.kv_get("p", "a").unwrap(),
            None,
            "nothing reaches the database before commit"
        );
        s.commit().unwrap();
        assert_eq!(s.db.kv_get("p", "a").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn namespaces_are_private() {
        let (_d, mut s) = state(KvQuotas::default());
        s.set("k", b"mine".to_vec()).unwrap();
        s.commit().unwrap();
        let mut other = KvState::new("q".into(), s.db.clone(), KvQuotas::default());
        assert_eq!(other.get("k").unwrap(), None);
        assert!(other.list_keys("").unwrap().is_empty());
    }

    #[test]
    fn quotas_are_enforced_and_named() {
        let quotas = KvQuotas {
            max_keys: 2,
            max_value_bytes: 4,
            max_ops_per_call: 5,
            ..KvQuotas::default()
        };
        let (_d, mut s) = state(quotas);
        let e = s.set("big", vec![0; 5]).unwrap_err();
        assert!(e.to_string().contains("kv.max_value_bytes"), "{e}");
        s.set("a", vec![1]).unwrap();
        s.set("b", vec![1]).unwrap();
        let e = s.set("c", vec![1]).unwrap_err();
        assert!(e.to_string().contains("kv.max_keys"), "{e}");
        s.set("a", vec![2]).unwrap(); // replacing does not add a key
        let e = s.get("a").unwrap_err();
        assert!(e.to_string().contains("kv.max_ops_per_call"), "{e}");
        assert_eq!(s.summary.refused.len(), 3);
    }

    #[test]
    fn list_keys_merges_pending_writes_and_deletes() {
        let (_d, mut s) = state(KvQuotas::default());
        s.set("x/1", vec![1]).unwrap();
        s.set("x/2", vec![1]).unwrap();
        s.commit().unwrap();
        let mut s2 = KvState::new("p".into(), s.db.clone(), KvQuotas::default());
        s2.delete("x/1").unwrap();
        s2.set("x/3", vec![1]).unwrap();
        assert_eq!(s2.list_keys("x/").unwrap(), vec!["x/2".to_owned(), "x/3".to_owned()]);
    }
}
