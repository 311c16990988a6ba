//! Locks of the order path.
//!
//! Two levels, always taken in this order so they cannot deadlock:
//!
//! 1. one lock per broker account ([`AccountLocks`]), held while the
//!    account's position is read (broker position plus the account's
//!    orders still in flight) and until the order is recorded, so orders
//!    on one account pass the position rail one at a time;
//! 2. the short global rails lock (`App::order_lock`), held for the
//!    dedupe check, the counts, the decision and the insert, so the
//!    count rails and exactly-once hold across accounts.
//!
//! Neither is held while the `order.intent` audit event commits or while
//! the broker answers: an order recorded in state `intent` is counted by
//! the rails of every later order (see `Orders::in_flight`), which is what
//! lets the locks end before the broker call.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// The lock of one account.
type AccountLock = Arc<tokio::sync::Mutex<()>>;

/// One async lock per (broker, account), made on first use.
#[derive(Debug, Default)]
pub struct AccountLocks {
    locks: Mutex<HashMap<(String, String), AccountLock>>,
}

impl AccountLocks {
    /// The lock of `account` at `broker`.
    pub fn of(&self, broker: &str, account: &str) -> AccountLock {
        let mut map = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry((broker.to_owned(), account.to_owned())).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_lock_per_account() {
        let locks = AccountLocks::default();
        assert!(Arc::ptr_eq(&locks.of("paper", "main"), &locks.of("paper", "main")));
        assert!(!Arc::ptr_eq(&locks.of("paper", "main"), &locks.of("paper", "hedge")));
        assert!(!Arc::ptr_eq(&locks.of("paper", "main"), &locks.of("alpaca", "main")));
    }
}
