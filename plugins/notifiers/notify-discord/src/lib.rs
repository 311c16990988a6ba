//! Discord notifier. Settings: `webhook_secret`, the name of a granted
//! secret holding the webhook URL (`https://discord.com/api/webhooks/ID/TOKEN`);
//! optional `username`. Wire format: Discord "Execute Webhook", JSON
//! `{"content": …, "username": …}`, 204 on success.
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
        let content: String = format!("**{}** {}", kind(n.kind), n.summary)
            .chars()
            .take(2000)
            .collect();
        let body = json!({
            "content": content,
            "username": s["username"].as_str().unwrap_or("algobanana"),
            "allowed_mentions": { "parse": [] },
        });
        let url_secret = http::SecretValue {
            secret: secret(&s, "webhook_secret")?,
            template: "{secret}".into(),
        };
        post_json(String::new(), Some(url_secret), Vec::new(), &body).map(drop)
    }
}

export_notifier!(Notifier);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "notify-discord"
version = "0.1.0"
world = "notifier"
wit = "0.1.0"
description = "Discord notifier: posts to a Discord webhook URL held as a secret"

[requests]
"#
);
