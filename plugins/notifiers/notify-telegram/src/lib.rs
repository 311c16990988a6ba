//! Telegram notifier. Settings: `token_secret` (a granted secret holding the
//! bot token), `chat_id`, optional `api_base` (default
//! `https://api.telegram.org`). Wire format: Bot API `POST
//! /bot<token>/sendMessage` with JSON `{"chat_id": …, "text": …}`; the answer
//! is `{"ok": true, "result": …}` or `{"ok": false, "description": …}`.
//!
//! `no_std`, like every first-party plugin (see
//! `algobanana_plugin_sdk::no_std_runtime!`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use algobanana_plugin_sdk::export_notifier;
use algobanana_plugin_sdk::http;
use algobanana_plugin_sdk::notifier::Guest;
use algobanana_plugin_sdk::notify::{kind, post_json, secret, settings};
use algobanana_plugin_sdk::types::{Notification, NotifyError};
use serde_json::{Value, json};

struct Notifier;

impl Guest for Notifier {
    fn notify(n: Notification, settings_json: String) -> Result<(), NotifyError> {
        let s = settings(&settings_json)?;
        let chat_id = s
            .get("chat_id")
            .cloned()
            .ok_or_else(|| NotifyError::InvalidConfig("settings need `chat_id`".into()))?;
        let base = s["api_base"]
            .as_str()
            .unwrap_or("https://api.telegram.org")
            .trim_end_matches('/')
            .to_owned();
        let body = json!({ "chat_id": chat_id, "text": format!("[{}] {}", kind(n.kind), n.summary), "disable_web_page_preview": true });
        let url_secret = http::SecretValue {
            secret: secret(&s, "token_secret")?,
            template: format!("{base}/bot{{secret}}/sendMessage"),
        };
        let (_, answer) = post_json(String::new(), Some(url_secret), Vec::new(), &body)?;
        let v: Value = serde_json::from_str(&answer).unwrap_or(Value::Null);
        if v["ok"] != json!(true) {
            return Err(NotifyError::Rejected(format!(
                "Telegram: {}",
                v["description"].as_str().unwrap_or(&answer)
            )));
        }
        Ok(())
    }
}

export_notifier!(Notifier);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "notify-telegram"
version = "0.1.0"
world = "notifier"
wit = "0.1.0"
description = "Telegram notifier: Bot API sendMessage with the bot token held as a secret"

[requests]
"#
);
