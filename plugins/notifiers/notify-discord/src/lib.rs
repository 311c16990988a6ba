//! Discord notifier. Settings: `webhook_secret`, the name of a granted
//! secret holding the webhook URL (`https://discord.com/api/webhooks/ID/TOKEN`);
//! optional `username`. Wire format: Discord "Execute Webhook", JSON
//! `{"content": …, "username": …}`, 204 on success.

use algobanana_plugin_sdk::export_notifier;
use algobanana_plugin_sdk::http::{self, Method, Request};
use algobanana_plugin_sdk::notifier::Guest;
use algobanana_plugin_sdk::secrets;
use algobanana_plugin_sdk::types::{Notification, NotificationKind, NotifyError};
use serde_json::{Value, json};

struct Notifier;

fn kind(k: NotificationKind) -> &'static str {
    match k {
        NotificationKind::Fill => "fill",
        NotificationKind::Rejection => "rejection",
        NotificationKind::Error => "error",
        NotificationKind::KillSwitch => "kill_switch",
    }
}

fn settings(text: &str) -> Result<Value, NotifyError> {
    serde_json::from_str(text).map_err(|e| NotifyError::InvalidConfig(format!("settings are not JSON: {e}")))
}

fn secret(s: &Value, key: &str) -> Result<u32, NotifyError> {
    let name = s[key]
        .as_str()
        .ok_or_else(|| NotifyError::InvalidConfig(format!("settings need `{key}`: the name of a granted secret")))?;
    secrets::open(name).map_err(|e| NotifyError::InvalidConfig(format!("secret `{name}`: {e:?}")))
}

fn post(request: Request) -> Result<(u16, String), NotifyError> {
    let resp = http::send(&request).map_err(|e| NotifyError::Unavailable(format!("{e:?}")))?;
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    if resp.status == 429 || resp.status >= 500 {
        return Err(NotifyError::Unavailable(format!("HTTP {}: {body}", resp.status)));
    }
    if !(200..300).contains(&resp.status) {
        return Err(NotifyError::Rejected(format!("HTTP {}: {body}", resp.status)));
    }
    Ok((resp.status, body))
}

fn json_request(
    url: String,
    url_secret: Option<http::SecretValue>,
    headers: Vec<http::Header>,
    body: &Value,
) -> Request {
    let mut headers = headers;
    headers.push(http::header("content-type", "application/json"));
    Request {
        method: Method::Post,
        url,
        url_secret,
        headers,
        body: body.to_string().into_bytes(),
    }
}

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
        post(json_request(String::new(), Some(url_secret), Vec::new(), &body)).map(drop)
    }
}

export_notifier!(Notifier);

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
