//! Generic webhook notifier. Settings: `url` (plain, granted in `http`) or
//! `url_secret` (a secret holding the whole URL); optional `signing_secret`
//! (adds `X-Algobanana-Signature: sha256=<hex HMAC of the body>`) and
//! `bearer_secret` (`Authorization: Bearer …`, filled by the host).

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
        post(json_request(url, url_secret, headers, &body)).map(drop)
    }
}

export_notifier!(Notifier);

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
