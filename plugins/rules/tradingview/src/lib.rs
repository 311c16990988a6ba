//! The default rule plugin: TradingView / TradersPost-style JSON alerts and
//! plain-text alerts into order intents. The parsing lives in `parse.rs`.
//!
//! `no_std`: the component imports nothing but `algobanana:plugin`, which
//! makes each fresh instance cheaper to create (see
//! `algobanana_plugin_sdk::no_std_runtime!`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

use algobanana_plugin_sdk::rule::Guest;
use algobanana_plugin_sdk::types::{Alert, CapabilityError, OrderIntent, Portfolio, RuleError};
use algobanana_plugin_sdk::{broker_view, export_rule};

mod parse;

struct TradingView;

impl Guest for TradingView {
    fn evaluate(alert: Alert, config: String, portfolio: Option<Portfolio>) -> Result<Vec<OrderIntent>, RuleError> {
        let settings = parse::settings(&config)?;
        // The manifest asks for the portfolio on request, so the argument
        // is none and most alerts (plain buys and sells) never make the
        // host ask the broker; one given anyway is used as is.
        let mut book = OnRequest(portfolio.map(Ok));
        parse::parse_alert(&alert.body, &settings, &mut book)
    }
}

/// The portfolio from `broker-view`, asked for once, on first use.
struct OnRequest(Option<Result<Portfolio, String>>);

impl parse::Book for OnRequest {
    fn portfolio(&mut self) -> Result<&Portfolio, String> {
        self.0
            .get_or_insert_with(|| {
                broker_view::get_portfolio().map_err(|e| match e {
                    CapabilityError::Denied(m)
                    | CapabilityError::QuotaExceeded(m)
                    | CapabilityError::InvalidArgument(m)
                    | CapabilityError::Unavailable(m) => m,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

export_rule!(TradingView);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "tradingview"
version = "0.1.0"
world = "rule"
wit = "0.1.0"
description = "TradingView and TradersPost alerts (JSON or plain text) to order intents"
portfolio = "on-request"

[requests]
kv = false
"#
);
