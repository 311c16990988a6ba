//! The default rule plugin: TradingView / TradersPost-style JSON alerts and
//! plain-text alerts into order intents. The parsing lives in `parse.rs`.

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
