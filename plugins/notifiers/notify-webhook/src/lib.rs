//! Generic webhook notifier. Settings: `url` (plain, granted in `http`) or
//! `url_secret` (a secret holding the whole URL); optional `signing_secret`
//! (adds `X-Algobanana-Signature: sha256=<hex HMAC of the body>`) and
//! `bearer_secret` (`Authorization: Bearer …`, filled by the host).
//!
//! `no_std`, like every first-party plugin (see
//! `algobanana_plugin_sdk::no_std_runtime!`).
#![cfg_attr(not(test), no_std)]

extern crate alloc;

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use algobanana_plugin_sdk::export_notifier;
use algobanana_plugin_sdk::notifier::Guest;
use algobanana_plugin_sdk::notify::{kind, post_json, secret, settings};
use algobanana_plugin_sdk::types::{Notification, NotifyError};
use algobanana_plugin_sdk::{http, secrets};
use serde_json::{Value, json};

struct Notifier;

impl Guest for Notifier {
    fn notify(n: Notification, settings_json: String) -> Result<(), NotifyError> {
        let s = settings(&settings_json)?;
        let body = json!({
            "kind": kind(n.kind), "route": n.route, "alert_id": n.alert_id,
            "client_order_id": n.client_order_id, "symbol": n.symbol, "summary": n.summary,
            "details": serde_json::from_str::<Value>(&n.details).unwrap_or(Value::Null), "at_ns": n.at,
        });
        let (url, url_secret) = match s["url"].as_str() {
            Some(u) => (u.to_owned(), None),
            None => (
                String::new(),
                Some(http::SecretValue {
                    secret: secret(&s, "url_secret")?,
                    template: "{secret}".into(),
                }),
            ),
        };
        let mut headers = Vec::new();
        if s.get("signing_secret").is_some() {
            let h = secret(&s, "signing_secret")?;
            let mac = secrets::sign(h, secrets::SignAlgorithm::HmacSha256, body.to_string().as_bytes())
                .map_err(|e| NotifyError::InvalidConfig(format!("signing: {e:?}")))?;
            let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
            headers.push(http::header("x-algobanana-signature", &format!("sha256={hex}")));
        }
        if s.get("bearer_secret").is_some() {
            headers.push(http::secret_header(
                "authorization",
                secret(&s, "bearer_secret")?,
                "Bearer {secret}",
            ));
        }
        post_json(url, url_secret, headers, &body).map(drop)
    }
}

export_notifier!(Notifier);
algobanana_plugin_sdk::no_std_runtime!();

algobanana_plugin_sdk::manifest!(
    r#"
name = "notify-webhook"
version = "0.1.0"
world = "notifier"
wit = "0.1.0"
description = "Generic webhook notifier: POSTs the notification as JSON, optionally signed"

[requests]
"#
);
