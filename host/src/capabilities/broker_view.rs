//! `broker-view`: the route account's positions and balances, for a rule
//! (see the interface in `wit/host.wit`).
//!
//! The pipeline hands each rule call a [`BrokerView`]: the portfolio it
//! already fetched (rules whose manifest keeps the default
//! `portfolio = "before-call"`), or a fetch to run on the first request
//! (`"on-request"`). The fetch is two audited calls of the route's broker
//! plugin, made at the same time. It runs as a task of its own, so a rule
//! that is stopped while it waits cannot cut those calls, or their audit
//! rows, short.
//!
//! The wait is the broker's time, not the rule's: a suspended guest sees
//! no epoch ticks, so it does not count against the rule's deadline, and
//! the rule call's wall-clock guard is extended by [`BrokerView::max_wait`],
//! the most the broker's two calls can take under the broker's own limits
//! (the same time the pipeline would have waited to fetch the portfolio
//! before the call). A live broker that takes 300 ms to answer is
//! therefore no reason to raise a rule's 100 ms deadline.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use crate::capabilities::CapabilityError;
use crate::plugins::bindings::{broker_view, types};
use crate::plugins::state::PluginState;

/// The fetch: `Ok(None)` when the broker could not report the portfolio,
/// `Err` when the host could not ask it (the message says why).
pub type Fetch = Pin<Box<dyn Future<Output = Result<Option<types::Portfolio>, String>> + Send>>;

/// What `broker-view.get-portfolio` answers during one call.
pub enum BrokerView {
    /// There is no route account behind this call (`plugin test` without
    /// a portfolio, benchmarks): the reason.
    Absent(String),
    /// Fetched before the call, or by an earlier request in this call;
    /// `None` when the broker could not report it.
    Known(Option<types::Portfolio>),
    /// Fetched on the first request, waited for at most `max_wait`.
    OnRequest {
        /// Starts the fetch.
        fetch: Box<dyn FnOnce() -> Fetch + Send>,
        /// See [`BrokerView::max_wait`].
        max_wait: Duration,
    },
    /// The first request's fetch failed or timed out: the same answer
    /// for every later request in this call.
    Failed(String),
}

impl std::fmt::Debug for BrokerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Absent(why) => f.debug_tuple("Absent").field(why).finish(),
            Self::Known(p) => f.debug_tuple("Known").field(&p.is_some()).finish(),
            Self::OnRequest { max_wait, .. } => f.debug_struct("OnRequest").field("max_wait", max_wait).finish(),
            Self::Failed(why) => f.debug_tuple("Failed").field(why).finish(),
        }
    }
}

impl Default for BrokerView {
    fn default() -> Self {
        Self::Absent("only rule calls for an alert have a route account to report on".into())
    }
}

impl BrokerView {
    /// The portfolio already known, for `evaluate`'s argument.
    pub fn known(&self) -> Option<&types::Portfolio> {
        match self {
            Self::Known(p) => p.as_ref(),
            _ => None,
        }
    }

    /// The longest a request may wait for the fetch: the rule call's
    /// wall-clock guard is extended by it. Zero when nothing is fetched
    /// during the call.
    pub fn max_wait(&self) -> Duration {
        match self {
            Self::OnRequest { max_wait, .. } => *max_wait,
            _ => Duration::ZERO,
        }
    }
}

/// The answer for a broker that could not report the portfolio.
const NOT_REPORTED: &str = "the route's broker could not report the account's positions and balances (its `positions` and `account` calls in the audit log say why)";

impl broker_view::Host for PluginState {
    async fn get_portfolio(&mut self) -> Result<types::Portfolio, CapabilityError> {
        let answer = match std::mem::take(&mut self.broker_view) {
            BrokerView::OnRequest { fetch, max_wait } => {
                let started = Instant::now();
                // A task of its own: if this call is stopped (a trap, the
                // wall-clock guard), the broker calls still finish and are
                // recorded.
                let task = tokio::spawn(fetch());
                let answer = match tokio::time::timeout(max_wait, task).await {
                    Ok(Ok(Ok(p))) => BrokerView::Known(p),
                    Ok(Ok(Err(why))) => BrokerView::Failed(format!("the host could not ask the route's broker: {why}")),
                    Ok(Err(join)) => BrokerView::Failed(format!("the host could not ask the route's broker: {join}")),
                    Err(_elapsed) => BrokerView::Failed(format!(
                        "the route's broker did not report the account within {} ms, the most its own limits allow; check the broker plugin (its calls are in the audit log)",
                        max_wait.as_millis()
                    )),
                };
                self.capability_events.push(serde_json::json!({
                    "action": "broker-view.get-portfolio",
                    "fetched": true,
                    "ok": matches!(answer, BrokerView::Known(Some(_))),
                    "wait_us": u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                }));
                answer
            }
            other => other,
        };
        let result = match &answer {
            BrokerView::Known(Some(p)) => Ok(p.clone()),
            BrokerView::Known(None) => Err(CapabilityError::Unavailable(NOT_REPORTED.into())),
            BrokerView::Absent(why) | BrokerView::Failed(why) => Err(CapabilityError::Unavailable(why.clone())),
            BrokerView::OnRequest { .. } => Err(CapabilityError::Unavailable("the portfolio fetch was lost".into())),
        };
        self.broker_view = answer;
        result
    }
}
