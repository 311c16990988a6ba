//! Slack notifier. Settings: `webhook_secret`, the name of a granted secret
//! holding the incoming-webhook URL (`https://hooks.slack.com/services/…`).
//! Wire format: JSON `{"text": …}`; Slack answers 200 with the body `ok`.
//!
//! `no_std`, like every first-party plugin (see
//! `algobanana_plugin_sdk::no_std_runtime!`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use algobanana_plugin_sdk::export_notifier;
use algobanana_plugin_sdk::http;
use algobanana_plugin_sdk::notifier::Guest;
use algobanana_plugin_sdk::notify::{kind, post_json, secret, settings};
use algobanana_plugin_sdk::types::{Notification, NotifyError};
use serde_json::json;

struct Notifier;

impl Guest for Notifier {
    fn notify(n: Notification, settings_json: String) -> Result<(), NotifyError> {
        let s = settings(&settings_json)?;
        let body = json!({ "text": format!("*{}* {}", kind(n.kind), n.summary) });
        let url_secret = http::SecretValue {
            secret: secret(&s, "webhook_secret")?,
            template: "{secret}".into(),
        };
        let (_, answer) = post_json(String::new(), Some(url_secret), Vec::new(), &body)?;
        if answer.trim() != "ok" {
            return Err(NotifyError::Rejected(format!("Slack answered `{answer}`")));
        }
        Ok(())
    }
}

export_notifier!(Notifier);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "notify-slack"
version = "0.1.0"
world = "notifier"
wit = "0.1.0"
description = "Slack notifier: posts to a Slack incoming-webhook URL held as a secret"

[requests]
"#
);
