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
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::audit::Outcome;
use crate::capabilities::CapabilityError;
use crate::plugins::bindings::{broker_view, types};
use crate::plugins::state::PluginState;

/// The fetch: `Ok(None)` when the broker could not report the portfolio,
/// `Err` when the host could not ask it (the message says why).
pub type Fetch = Pin<Box<dyn Future<Output = Result<Option<types::Portfolio>, String>> + Send>>;

/// What `broker-view.get-portfolio` answers during one call.
pub enum BrokerView {
    /// The answer: fetched before the call or by an earlier request in
    /// this call, or why there is none (the broker could not report it,
    /// the fetch failed, or no route account stands behind this call).
    Ready(Result<Arc<types::Portfolio>, String>),
    /// Fetched on the first request, waited for at most `max_wait`.
    OnRequest {
        /// Starts the fetch.
        fetch: Box<dyn FnOnce() -> Fetch + Send>,
        /// See [`BrokerView::max_wait`].
        max_wait: Duration,
    },
}

impl std::fmt::Debug for BrokerView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Ready(answer) => f
                .debug_tuple("Ready")
                .field(&answer.as_ref().map(|_| "portfolio"))
                .finish(),
            Self::OnRequest { max_wait, .. } => f.debug_struct("OnRequest").field("max_wait", max_wait).finish(),
        }
    }
}

impl Default for BrokerView {
    fn default() -> Self {
        Self::Ready(Err(
            "only rule calls for an alert have a route account to report on".into()
        ))
    }
}

/// The answer for a broker that could not report the portfolio.
const NOT_REPORTED: &str = "the route's broker could not report the account's positions and balances (its `positions` and `account` calls in the audit log say why)";

impl BrokerView {
    /// What the broker reported (`None`: it could not say).
    pub fn reported(portfolio: Option<types::Portfolio>) -> Self {
        Self::Ready(portfolio.map(Arc::new).ok_or_else(|| NOT_REPORTED.to_owned()))
    }

    /// The portfolio already known, for `evaluate`'s argument.
    pub fn known(&self) -> Option<&Arc<types::Portfolio>> {
        match self {
            Self::Ready(Ok(p)) => Some(p),
            _ => None,
        }
    }

    /// The longest a request may wait for the fetch: the rule call's
    /// wall-clock guard is extended by it. Zero when nothing is fetched
    /// during the call.
    pub fn max_wait(&self) -> Duration {
        match self {
            Self::OnRequest { max_wait, .. } => *max_wait,
            Self::Ready(_) => Duration::ZERO,
        }
    }
}

impl broker_view::Host for PluginState {
    async fn get_portfolio(&mut self) -> Result<types::Portfolio, CapabilityError> {
        let answer = match std::mem::take(&mut self.broker_view) {
            BrokerView::Ready(answer) => answer,
            BrokerView::OnRequest { fetch, max_wait } => {
                let started = Instant::now();
                // A task of its own: if this call is stopped (a trap, the
                // wall-clock guard), the broker calls still finish and are
                // recorded.
                let task = tokio::spawn(fetch());
                let answer = match tokio::time::timeout(max_wait, task).await {
                    Ok(Ok(Ok(p))) => p.map(Arc::new).ok_or_else(|| NOT_REPORTED.to_owned()),
                    Ok(Ok(Err(why))) => Err(format!("the host could not ask the route's broker: {why}")),
                    Ok(Err(join)) => Err(format!("the host could not ask the route's broker: {join}")),
                    Err(_elapsed) => Err(format!(
                        "the route's broker did not report the account within {} ms, the most its own limits allow; check the broker plugin (its calls are in the audit log)",
                        max_wait.as_millis()
                    )),
                };
                let outcome = if answer.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Error
                };
                self.capability_events.push(serde_json::json!({
                    "action": "broker-view.get-portfolio",
                    "outcome": outcome.as_str(),
                    "fetched": true,
                    "ok": answer.is_ok(),
                    "wait_us": u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                }));
                answer
            }
        };
        let result = match &answer {
            Ok(p) => Ok(types::Portfolio::clone(p)),
            Err(why) => Err(CapabilityError::Unavailable(why.clone())),
        };
        self.broker_view = BrokerView::Ready(answer);
        result
    }
}
