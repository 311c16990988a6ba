//! The hash chain: each event's `entry_hash` is SHA-256 over a
//! domain-separated, length-prefixed encoding of every column plus the
//! previous event's hash, so changing, removing or reordering any row breaks
//! every hash after it.
//!
//! ```text
//! entry_hash = SHA-256("algobanana-audit-v1\0" || u64be(seq) || i64be(ts_ns)
//!   || lp(actor_kind) || lp(actor_id) || lp(action) || lp(resource) || lp(outcome)
//!   || lp(request_id) || lp(correlation_id) || lp(session_id) || lp(source_ip)
//!   || lp(user_agent) || lp(payload) || prev_hash)
//! lp(x) = u32be(len(x)) || x;  lp(NULL) = 0xFFFFFFFF
//! genesis = SHA-256("algobanana-audit-v1 genesis\0" || install_id)
//! ```

use sha2::{Digest, Sha256};

/// A SHA-256 hash.
pub type Hash = [u8; 32];

/// The columns of one stored event, as hashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row<'a> {
    /// Sequence number.
    pub seq: u64,
    /// UTC nanoseconds.
    pub ts_ns: i64,
    /// Actor kind.
    pub actor_kind: &'a str,
    /// Actor id.
    pub actor_id: &'a str,
    /// Action.
    pub action: &'a str,
    /// Resource.
    pub resource: Option<&'a str>,
    /// Outcome.
    pub outcome: &'a str,
    /// Request id.
    pub request_id: Option<&'a str>,
    /// Correlation id.
    pub correlation_id: Option<&'a str>,
    /// Session id.
    pub session_id: Option<&'a str>,
    /// Source IP.
    pub source_ip: Option<&'a str>,
    /// User agent.
    pub user_agent: Option<&'a str>,
    /// Canonical JSON payload, exactly as stored.
    pub payload: &'a str,
}

fn lp(h: &mut Sha256, field: Option<&str>) {
    match field {
        None => h.update(u32::MAX.to_be_bytes()),
        Some(s) => {
            // Fields are far below 4 GiB (payloads are capped); saturating
            // keeps the encoding total without a panic path.
            h.update(u32::try_from(s.len()).unwrap_or(u32::MAX - 1).to_be_bytes());
            h.update(s.as_bytes());
        }
    }
}

/// The hash of `row` chained to `prev`.
pub fn entry_hash(row: &Row<'_>, prev: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update(b"algobanana-audit-v1\0");
    h.update(row.seq.to_be_bytes());
    h.update(row.ts_ns.to_be_bytes());
    for f in [
        Some(row.actor_kind),
        Some(row.actor_id),
        Some(row.action),
        row.resource,
        Some(row.outcome),
        row.request_id,
        row.correlation_id,
        row.session_id,
        row.source_ip,
        row.user_agent,
        Some(row.payload),
    ] {
        lp(&mut h, f);
    }
    h.update(prev);
    h.finalize().into()
}

/// The `prev_hash` of the first event of an installation.
pub fn genesis(install_id: &str) -> Hash {
    let mut h = Sha256::new();
    h.update(b"algobanana-audit-v1 genesis\0");
    h.update(install_id.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(payload: &str) -> Row<'_> {
        Row {
            seq: 0,
            ts_ns: 1,
            actor_kind: "system",
            actor_id: "host",
            action: "system.start",
            resource: None,
            outcome: "success",
            request_id: None,
            correlation_id: None,
            session_id: None,
            source_ip: None,
            user_agent: None,
            payload,
        }
    }

    #[test]
    fn null_and_empty_fields_hash_differently() {
        let g = genesis("x");
        let a = entry_hash(&row("{}"), &g);
        let mut r = row("{}");
        r.resource = Some("");
        assert_ne!(a, entry_hash(&r, &g));
    }

    #[test]
    fn field_boundaries_cannot_be_shifted() {
        let g = genesis("x");
        let mut a = row("{}");
        a.actor_id = "ab";
        a.action = "c";
        let mut b = row("{}");
        b.actor_id = "a";
        b.action = "bc";
        assert_ne!(entry_hash(&a, &g), entry_hash(&b, &g));
    }

    #[test]
    fn every_field_and_the_previous_hash_are_covered() {
        let g = genesis("x");
        let base = entry_hash(&row("{}"), &g);
        assert_ne!(base, entry_hash(&row("{ }"), &g));
        assert_ne!(base, entry_hash(&row("{}"), &genesis("y")));
        let mut r = row("{}");
        r.seq = 1;
        assert_ne!(base, entry_hash(&r, &g));
    }
}
