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

use algobanana_plugin_sdk::export_rule;
use algobanana_plugin_sdk::rule::Guest;
use algobanana_plugin_sdk::types::{Alert, OrderIntent, Portfolio, RuleError};

mod parse;

struct TradingView;

impl Guest for TradingView {
    fn evaluate(alert: Alert, config: String, portfolio: Option<Portfolio>) -> Result<Vec<OrderIntent>, RuleError> {
        let settings = parse::settings(&config)?;
        parse::parse_alert(&alert.body, &settings, portfolio.as_ref())
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

[requests]
kv = false
"#
);
