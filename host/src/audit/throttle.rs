//! Refusals of requests that prove nothing (an unknown hook token, no or a
//! bad API token, a source not allowed, a webhook over its rate or a full
//! intake queue) are audited without letting a flood of them fill the
//! disk or the audit writer.
//!
//! The hook path is reachable from the internet (TradingView must reach
//! it), and so is the admin API on the same listener. Each refusal used to
//! be an event of its own, committed and synced before the answer: anyone
//! could send thousands a second, each one a synced audit commit and about
//! a kilobyte of log, until the disk was full and the host, which stops
//! taking alerts when its audit log cannot be written, stopped trading.
//!
//! Now, in each one-minute window, every source (an IPv4 address, an IPv6
//! /64) has its first [`PER_SOURCE`] refusals recorded as events of their
//! own, and the window at most [`OVERALL`]; the rest are counted, not
//! dropped: when the window ends, one summary event per kind of refusal
//! (same action, actor, resource and status) says how many there were, a
//! sample reason, and the sources that sent most of them. Nothing a valid
//! credential does is throttled here (authenticated requests and their
//! denials are always recorded one by one).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{ActorKind, AuditEvent, Outcome};

/// Refusals recorded one by one per source and window.
pub const PER_SOURCE: u32 = 20;
/// Refusals recorded one by one per window, all sources together.
pub const OVERALL: u32 = 600;
/// The window.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Sources tracked per window; past this, further new sources are counted
/// under `other` (a flood from many addresses cannot grow the map).
const MAX_SOURCES: usize = 10_000;
/// Sources listed in a summary.
const TOP_SOURCES: usize = 10;

/// The kind of a refusal: what one summary covers. Only values the host
/// chose (the action, the route or endpoint, the status), never what a
/// sender chose (a token's id part, a reason quoting the request): a
/// flood that varies those still makes one summary.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Kind {
    action: &'static str,
    actor_kind: ActorKind,
    resource: Option<String>,
    status: u16,
}

#[derive(Debug, Default)]
struct Suppressed {
    count: u64,
    /// The actor of the first one, or `several` once they differ.
    actor_id: String,
    first_ns: i64,
    last_ns: i64,
    sample_reason: String,
    sources: HashMap<String, u64>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    started_ns: i64,
    recorded: u32,
    per_source: HashMap<String, u32>,
    suppressed: HashMap<Kind, Suppressed>,
}

impl Window {
    fn new(now: Instant) -> Self {
        Self {
            started: now,
            started_ns: super::now_ns(),
            recorded: 0,
            per_source: HashMap::new(),
            suppressed: HashMap::new(),
        }
    }
}

/// The throttle: one per host.
#[derive(Debug)]
pub struct Refusals {
    window: Mutex<Window>,
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            window: Mutex::new(Window::new(Instant::now())),
        }
    }
}

/// What to record for one refusal.
#[derive(Debug, Default)]
pub struct Admitted {
    /// The refusal's own event, unless it was counted into a summary.
    pub event: Option<AuditEvent>,
    /// Summaries of a window that has ended, to record first.
    pub summaries: Vec<AuditEvent>,
}

impl Admitted {
    /// Every event to record, summaries first.
    pub fn events(self) -> impl Iterator<Item = AuditEvent> {
        self.summaries.into_iter().chain(self.event)
    }
}

/// The key of a source: the address, or its /64 for IPv6 (one host holds a
/// whole /64).
fn source_key(ip: Option<IpAddr>) -> String {
    match ip {
        None => "unknown".to_owned(),
        Some(IpAddr::V4(v4)) => v4.to_string(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
    }
}

impl Refusals {
    /// Admits `event`, a refusal with HTTP `status` whose `reason` is in
    /// its payload: returns it to be recorded, or counts it into the
    /// window's summary; and the summaries of a window that ended.
    pub fn admit(&self, event: AuditEvent, status: u16, reason: &str) -> Admitted {
        self.admit_at(Instant::now(), event, status, reason)
    }

    fn admit_at(&self, now: Instant, event: AuditEvent, status: u16, reason: &str) -> Admitted {
        let mut w = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let summaries = if now.duration_since(w.started) >= WINDOW {
            let old = std::mem::replace(&mut *w, Window::new(now));
            summaries(old)
        } else {
            Vec::new()
        };
        let source = source_key(event.context.source_ip);
        let tracked = w.per_source.len() < MAX_SOURCES || w.per_source.contains_key(&source);
        let own = if tracked {
            let n = w.per_source.entry(source.clone()).or_insert(0);
            *n += 1;
            *n <= PER_SOURCE
        } else {
            false
        };
        if own && w.recorded < OVERALL {
            w.recorded += 1;
            return Admitted {
                event: Some(event),
                summaries,
            };
        }
        let kind = Kind {
            action: event.action,
            actor_kind: event.actor_kind,
            resource: event.resource.clone(),
            status,
        };
        let s = w.suppressed.entry(kind).or_default();
        if s.count == 0 {
            s.first_ns = event.ts_ns;
            reason.clone_into(&mut s.sample_reason);
            s.actor_id.clone_from(&event.actor_id);
        } else if s.actor_id != event.actor_id {
            "several".clone_into(&mut s.actor_id);
        }
        s.count += 1;
        s.last_ns = event.ts_ns;
        let listed = if s.sources.len() < MAX_SOURCES || s.sources.contains_key(&source) {
            source
        } else {
            "other".to_owned()
        };
        *s.sources.entry(listed).or_insert(0) += 1;
        Admitted { event: None, summaries }
    }

    /// The summaries of the current window, which ends now (a new one
    /// starts): for the periodic flush and for shutdown, so that nothing
    /// counted is left unrecorded.
    pub fn flush(&self) -> Vec<AuditEvent> {
        let mut w = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let old = std::mem::replace(&mut *w, Window::new(Instant::now()));
        summaries(old)
    }

    /// The summaries of a window that has run its full length, if it has
    /// (a new one starts then); none otherwise.
    pub fn due(&self) -> Vec<AuditEvent> {
        let mut w = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.started.elapsed() < WINDOW {
            return Vec::new();
        }
        let old = std::mem::replace(&mut *w, Window::new(Instant::now()));
        summaries(old)
    }
}

fn summaries(w: Window) -> Vec<AuditEvent> {
    let mut out: Vec<AuditEvent> = w
        .suppressed
        .into_iter()
        .map(|(kind, s)| {
            let mut sources: Vec<(String, u64)> = s.sources.into_iter().collect();
            sources.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            let distinct = sources.len();
            sources.truncate(TOP_SOURCES);
            let mut e = AuditEvent::new(kind.actor_kind, s.actor_id, kind.action, Outcome::Deny).payload(json!({
                "summary": true,
                "count": s.count,
                "status": kind.status,
                "reason": s.sample_reason,
                "first": super::format_ts(s.first_ns),
                "last": super::format_ts(s.last_ns),
                "window_start": super::format_ts(w.started_ns),
                "distinct_sources": distinct,
                "top_sources": sources.iter().map(|(ip, n)| json!({ "source": ip, "count": n })).collect::<Vec<_>>(),
                "why": format!(
                    "more than {PER_SOURCE} refusals from one source, or {OVERALL} in all, within {} s: counted here instead of one event each",
                    WINDOW.as_secs()
                ),
            }));
            e.resource = kind.resource;
            e
        })
        .collect();
    out.sort_by(|a, b| a.action.cmp(b.action).then_with(|| a.resource.cmp(&b.resource)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Context, action};

    fn refusal(ip: &str, route: &str) -> AuditEvent {
        AuditEvent::new(ActorKind::WebhookSource, route, action::ALERT_REJECTED, Outcome::Deny)
            .resource(format!("route:{route}"))
            .context(&Context {
                source_ip: Some(ip.parse().unwrap()),
                ..Context::default()
            })
    }

    #[test]
    fn each_source_gets_its_own_events_up_to_a_limit_then_a_count() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let mut own = 0;
        for _ in 0..50 {
            let a = r.admit_at(t0, refusal("198.51.100.7", "unknown"), 404, "unknown hook token");
            assert!(a.summaries.is_empty());
            own += usize::from(a.event.is_some());
        }
        assert_eq!(own, PER_SOURCE as usize);
        // Another source is not held back by the first one.
        assert!(
            r.admit_at(t0, refusal("198.51.100.8", "unknown"), 404, "x")
                .event
                .is_some()
        );
        // The same /64 is one source; a v4-mapped address is its v4 one.
        for _ in 0..PER_SOURCE {
            r.admit_at(t0, refusal("2001:db8:1:2::1", "unknown"), 404, "x");
        }
        assert!(
            r.admit_at(t0, refusal("2001:db8:1:2::ffff", "unknown"), 404, "x")
                .event
                .is_none()
        );
        assert!(
            r.admit_at(t0, refusal("::ffff:198.51.100.7", "unknown"), 404, "x")
                .event
                .is_none()
        );

        // The next window starts with the summaries of this one.
        let later = t0 + WINDOW;
        let a = r.admit_at(later, refusal("198.51.100.7", "unknown"), 404, "unknown hook token");
        assert!(a.event.is_some(), "a new window, a new allowance");
        assert_eq!(a.summaries.len(), 1, "{:?}", a.summaries);
        let s = &a.summaries[0];
        assert_eq!(s.action, action::ALERT_REJECTED);
        assert_eq!(s.resource.as_deref(), Some("route:unknown"));
        assert_eq!(s.payload["count"], 30 + 1 + 1);
        assert_eq!(s.payload["reason"], "unknown hook token");
        assert_eq!(s.payload["distinct_sources"], 2);
        assert_eq!(
            s.payload["top_sources"][0],
            json!({ "source": "198.51.100.7", "count": 31 })
        );
        assert_eq!(
            s.payload["top_sources"][1],
            json!({ "source": "2001:db8:1:2::/64", "count": 1 })
        );
        assert!(r.flush().is_empty(), "nothing suppressed in the new window yet");
    }

    #[test]
    fn all_sources_together_are_capped_and_kinds_are_summarized_apart() {
        let r = Refusals::default();
        let t0 = Instant::now();
        let mut own = 0u32;
        for i in 0..2_000u32 {
            let ip = format!("10.{}.{}.{}", i / 65_536, (i / 256) % 256, i % 256);
            let route = if i % 2 == 0 { "a" } else { "b" };
            own += u32::from(r.admit_at(t0, refusal(&ip, route), 429, "rate limit").event.is_some());
        }
        assert_eq!(own, OVERALL);
        let s = r.flush();
        assert_eq!(s.len(), 2, "one summary per route");
        let counted: u64 = s.iter().map(|e| e.payload["count"].as_u64().unwrap()).sum();
        assert_eq!(counted, u64::from(2_000 - OVERALL));
        assert_eq!(s[0].actor_id, "a");
        assert_eq!(s[0].resource.as_deref(), Some("route:a"));
        assert_eq!(s[0].payload["status"], 429);
        assert_eq!(s[0].payload["top_sources"].as_array().unwrap().len(), TOP_SOURCES);
    }

    /// What a sender chooses (here the actor id, from a presented token's
    /// id part) does not split the summary.
    #[test]
    fn a_flood_that_varies_what_it_sends_is_one_summary() {
        let r = Refusals::default();
        let t0 = Instant::now();
        for i in 0..100 {
            let e = AuditEvent::new(
                ActorKind::ApiToken,
                format!("id{i}"),
                action::AUTH_DENIED,
                Outcome::Deny,
            )
            .resource("admin:orders_read")
            .context(&Context {
                source_ip: Some("203.0.113.9".parse().unwrap()),
                ..Context::default()
            });
            r.admit_at(t0, e, 401, &format!("unknown token id{i}"));
        }
        let s = r.flush();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].actor_id, "several");
        assert_eq!(s[0].payload["count"], 100 - PER_SOURCE);
        assert_eq!(s[0].payload["reason"], format!("unknown token id{PER_SOURCE}"));
    }

    #[test]
    fn sources_past_the_cap_are_counted_not_tracked() {
        let r = Refusals::default();
        let t0 = Instant::now();
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i).to_string();
            r.admit_at(t0, refusal(&ip, "a"), 404, "x");
        }
        let w = r.window.lock().unwrap();
        assert_eq!(w.per_source.len(), MAX_SOURCES);
        drop(w);
        let s = r.flush();
        let total: u64 = s.iter().map(|e| e.payload["count"].as_u64().unwrap()).sum();
        assert_eq!(total + u64::from(OVERALL), MAX_SOURCES as u64 + 100);
    }
}
