//! `algobanana:plugin/http`: outbound HTTP made by the host for a plugin.
//!
//! Two layers, both on every request (operator view: README, "Granting
//! capabilities"; design: `../shared/docs/plugin-sandbox.md` §3):
//! 1. the origin (`scheme://host:port`) must be in the plugin's grant;
//! 2. the host resolves the name itself, drops loopback, private, CGNAT,
//!    link-local (cloud metadata), multicast, unspecified and documentation
//!    addresses unless the grant allows them, and connects to the vetted
//!    address directly, so DNS cannot re-point the name between check and
//!    connect.
//!
//! Credential headers can carry only host-filled secret templates; the
//! secret is filled after both layers pass, `secret.used` is committed
//! before the request leaves, and any echo of the secret in the response is
//! redacted before the plugin sees it. Redirects are not followed.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use serde_json::json;
use zeroize::Zeroizing;

use super::CapabilityError;
use crate::audit::{ActorKind, AuditEvent, Outcome, action};
use crate::config::Grant;
use crate::plugins::bindings::http::{self, HeaderValue, Method, Request, Response};
use crate::plugins::state::PluginState;

/// Resolves host names. A trait so tests can map a name to an address
/// (the DNS-rebinding case) without a DNS server.
pub trait Resolver: Send + Sync + std::fmt::Debug {
    /// Every address of `host`.
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>;
}

/// The system resolver (`getaddrinfo` through tokio).
#[derive(Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) })
    }
}

/// Why an address is blocked, if it is.
pub fn blocked(ip: IpAddr, allow_loopback: bool, allow_private: bool) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => blocked_v4(v4, allow_loopback, allow_private),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return blocked_v4(v4, allow_loopback, allow_private);
            }
            let seg = v6.segments();
            if v6.is_loopback() {
                (!allow_loopback).then_some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if (seg[0] & 0xffc0) == 0xfe80 {
                (!allow_private).then_some("link-local")
            } else if (seg[0] & 0xfe00) == 0xfc00 {
                (!allow_private).then_some("private")
            } else if seg[0] == 0x2001 && seg[1] == 0x0db8 {
                Some("documentation")
            } else if seg[0] == 0x0064 && seg[1] == 0xff9b {
                // NAT64 can embed any IPv4 address, metadata included.
                (!allow_private).then_some("NAT64")
            } else {
                None
            }
        }
    }
}

fn blocked_v4(ip: Ipv4Addr, allow_loopback: bool, allow_private: bool) -> Option<&'static str> {
    let o = ip.octets();
    if ip.is_loopback() {
        (!allow_loopback).then_some("loopback")
    } else if ip.is_unspecified() || o[0] == 0 {
        Some("unspecified")
    } else if ip.is_link_local() {
        (!allow_private).then_some("link-local (cloud metadata)")
    } else if ip.is_private() {
        (!allow_private).then_some("private")
    } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
        (!allow_private).then_some("CGNAT")
    } else if ip.is_multicast() || ip.is_broadcast() || o[0] >= 240 {
        Some("multicast or reserved")
    } else if ip.is_documentation() || (o[0] == 198 && (o[1] & 0xfe) == 18) {
        Some("documentation or benchmarking")
    } else {
        None
    }
}

/// Header names a plugin may never set.
const HOST_SET: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
];

/// Returns true if and only if `name` (lower-case) is a credential header:
/// its value may only come from a secret.
pub fn is_credential_header(name: &str) -> bool {
    matches!(name, "authorization" | "proxy-authorization" | "cookie")
        || ["api-key", "apikey", "secret", "token", "password", "passphrase"]
            .iter()
            .any(|w| name.contains(w))
}

/// Per-call HTTP state.
#[derive(Debug)]
pub struct HttpState {
    grant: Arc<Grant>,
    resolver: Arc<dyn Resolver>,
    /// When the call must be over; no request runs past it.
    deadline: Instant,
    requests: u32,
    /// Bytes sent and received (summary for the call row).
    pub bytes_out: u64,
    /// Bytes received.
    pub bytes_in: u64,
}

impl HttpState {
    /// A fresh state for one call.
    pub fn new(grant: Arc<Grant>, resolver: Arc<dyn Resolver>, deadline: Instant) -> Self {
        Self {
            grant,
            resolver,
            deadline,
            requests: 0,
            bytes_out: 0,
            bytes_in: 0,
        }
    }

    /// Requests made so far.
    pub fn requests(&self) -> u32 {
        self.requests
    }
}

fn method_str(m: Method) -> &'static str {
    match m {
        Method::Get => "GET",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Patch => "PATCH",
        Method::Delete => "DELETE",
        Method::Head => "HEAD",
    }
}

/// The URL with its query cut, for audit rows and errors (queries can carry
/// signatures and account ids; paths rarely do).
fn redact_url(url: &str) -> String {
    let base = url.split(['?', '#']).next().unwrap_or(url);
    let mut s: String = base.chars().take(512).collect();
    if base.len() < url.len() {
        s.push_str("?…");
    }
    s
}

struct Target {
    scheme: &'static str,
    host: String,
    port: u16,
    path_and_query: String,
    authority: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{}` is not a URL: {e}", redact_url(url)))?;
    let scheme = match uri.scheme_str() {
        Some("https") => "https",
        Some("http") => "http",
        _ => return Err(format!("`{}`: only http:// and https:// URLs", redact_url(url))),
    };
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{}` has no host", redact_url(url)))?;
    if authority.as_str().contains('@') {
        return Err("URLs with user info are refused; credentials go in secret headers".into());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(if scheme == "https" { 443 } else { 80 });
    Ok(Target {
        scheme,
        host,
        port,
        path_and_query: uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        authority: authority.as_str().to_owned(),
    })
}

fn tls_config() -> Arc<tokio_rustls::rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<tokio_rustls::rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
            Arc::new(
                tokio_rustls::rustls::ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map(|b| b.with_root_certificates(roots).with_no_client_auth())
                    .unwrap_or_else(|_| unreachable_config()),
            )
        })
        .clone()
}

#[cold]
fn unreachable_config() -> tokio_rustls::rustls::ClientConfig {
    // ring supports the default protocol versions; this is never reached.
    tokio_rustls::rustls::ClientConfig::builder()
        .with_root_certificates(tokio_rustls::rustls::RootCertStore::empty())
        .with_no_client_auth()
}

/// Replaces every occurrence of `needle` in `hay` with `[REDACTED]`.
fn redact(hay: &[u8], needle: &[u8]) -> Vec<u8> {
    if needle.len() < 4 || hay.len() < needle.len() {
        return hay.to_vec();
    }
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(needle) {
            out.extend_from_slice(b"[REDACTED]");
            i += needle.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

impl PluginState {
    fn http_refuse(&mut self, reason: String, detail: serde_json::Value) -> CapabilityError {
        self.deny("http.send", &reason, detail);
        CapabilityError::Denied(reason)
    }
}

impl http::Host for PluginState {
    async fn send(
        &mut self,
        request: Request,
    ) -> wasmtime::Result<Result<Response, crate::plugins::bindings::types::CapabilityError>> {
        super::lower(self.http_send(request).await)
    }
}

impl PluginState {
    async fn http_send(&mut self, request: Request) -> Result<Response, CapabilityError> {
        let started = Instant::now();
        let plugin = self.log.plugin.clone();
        let method = method_str(request.method);
        // A secret URL: filled here, shown (audit, errors) only as its template.
        let mut url_secret_value: Option<Zeroizing<Vec<u8>>> = None;
        let mut url_secret_name: Option<String> = None;
        let (url, shown_url) = match &request.url_secret {
            None => (request.url.clone(), redact_url(&request.url)),
            Some(s) => {
                if s.template.matches("{secret}").count() != 1 {
                    return Err(CapabilityError::InvalidArgument(
                        "the URL template must contain `{secret}` exactly once".into(),
                    ));
                }
                let name = self.secrets.name(s.secret)?.to_owned();
                let value = self.secrets.value(s.secret)?;
                let Ok(text) = std::str::from_utf8(&value) else {
                    return Err(CapabilityError::InvalidArgument(format!("secret `{name}` is not text")));
                };
                let filled = s.template.replacen("{secret}", text, 1);
                let shown = redact_url(&s.template);
                url_secret_value = Some(value);
                url_secret_name = Some(name);
                (filled, shown)
            }
        };
        if self.audit.is_none() {
            return Err(CapabilityError::Unavailable(
                "outbound HTTP is available only in audited calls".into(),
            ));
        }
        if self.http.requests >= self.http.grant.max_requests_per_call {
            let reason = format!(
                "at most {} outbound requests per call (max_requests_per_call in [plugins.{plugin}.grant])",
                self.http.grant.max_requests_per_call
            );
            self.deny("http.send", &reason, json!({ "url": shown_url }));
            return Err(CapabilityError::QuotaExceeded(reason));
        }
        self.http.requests += 1;

        // Layer 1: the origin.
        let target = match parse_url(&url) {
            Ok(t) => t,
            // Never echo a filled secret URL back.
            Err(_) if url_secret_value.is_some() => {
                return Err(CapabilityError::InvalidArgument(format!(
                    "the URL made from `{shown_url}` is not valid"
                )));
            }
            Err(e) => return Err(CapabilityError::InvalidArgument(e)),
        };
        if let (Some(name), Some(hosts)) = (
            &url_secret_name,
            url_secret_name.as_ref().and_then(|n| self.secrets.store_hosts(n)),
        ) && !hosts.contains(&target.host)
        {
            let reason = format!(
                "secret `{name}` may be sent only to {}, not to {}",
                hosts.join(", "),
                target.host
            );
            return Err(self.http_refuse(reason, json!({ "url": shown_url, "secret": name })));
        }
        let origin = format!("{}://{}:{}", target.scheme, target.host, target.port);
        if !self
            .http
            .grant
            .http
            .iter()
            .any(|o| o.matches(target.scheme, &target.host, target.port))
        {
            let reason = format!(
                "{origin} is not in this plugin's http grant; the operator can add it to [plugins.{plugin}.grant] http"
            );
            return Err(self.http_refuse(reason, json!({ "url": shown_url, "origin": origin })));
        }

        // Headers: names valid, host-set ones refused, credentials only from secrets.
        let mut headers: Vec<(hyper::header::HeaderName, HeaderSource)> = Vec::new();
        for h in request.headers {
            let name = h.name.to_ascii_lowercase();
            let Ok(hname) = hyper::header::HeaderName::from_bytes(name.as_bytes()) else {
                return Err(CapabilityError::InvalidArgument(format!(
                    "`{}` is not a header name",
                    name.chars().take(64).collect::<String>()
                )));
            };
            if HOST_SET.contains(&name.as_str()) {
                let reason = format!("the `{name}` header is set by the host");
                return Err(self.http_refuse(reason, json!({ "url": shown_url, "header": name })));
            }
            match h.value {
                HeaderValue::Text(v) => {
                    if is_credential_header(&name) {
                        let reason = format!(
                            "`{name}` is a credential header: its value must come from a secret handle (http::secret_header), never from the plugin"
                        );
                        return Err(self.http_refuse(reason, json!({ "url": shown_url, "header": name })));
                    }
                    headers.push((hname, HeaderSource::Text(v)));
                }
                HeaderValue::Secret(s) => {
                    if s.template.matches("{secret}").count() != 1 {
                        return Err(CapabilityError::InvalidArgument(format!(
                            "the template for `{name}` must contain `{{secret}}` exactly once"
                        )));
                    }
                    let secret = self.secrets.name(s.secret)?.to_owned();
                    if let Some(hosts) = self.secrets.hosts(s.secret)
                        && !hosts.contains(&target.host)
                    {
                        let reason = format!(
                            "secret `{secret}` may be sent only to {}, not to {}",
                            hosts.join(", "),
                            target.host
                        );
                        return Err(self.http_refuse(reason, json!({ "url": shown_url, "secret": secret })));
                    }
                    headers.push((hname, HeaderSource::Secret(s.secret, secret, s.template)));
                }
            }
        }
        if request.body.len() > self.http.grant.max_request_bytes {
            let reason = format!(
                "a {}-byte request body is over the {}-byte limit (max_request_bytes)",
                request.body.len(),
                self.http.grant.max_request_bytes
            );
            self.deny("http.send", &reason, json!({ "url": shown_url }));
            return Err(CapabilityError::QuotaExceeded(reason));
        }

        // Layer 2: resolve here, vet every address, connect to a vetted one.
        let grant = self.http.grant.clone();
        let addrs: Vec<SocketAddr> = match target.host.parse::<IpAddr>() {
            Ok(ip) => vec![SocketAddr::new(ip, target.port)],
            Err(_) => {
                let remaining = self.http.deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(
                    remaining.min(grant.connect_timeout),
                    self.http.resolver.resolve(target.host.clone(), target.port),
                )
                .await
                {
                    Ok(Ok(a)) if !a.is_empty() => a,
                    Ok(Ok(_)) | Ok(Err(_)) | Err(_) => {
                        return Err(CapabilityError::Unavailable(format!(
                            "cannot resolve `{}`",
                            target.host
                        )));
                    }
                }
            }
        };
        let mut refused = Vec::new();
        let vetted: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match blocked(a.ip(), grant.allow_loopback, grant.allow_private) {
                Some(why) => {
                    refused.push(format!("{} ({why})", a.ip()));
                    false
                }
                None => true,
            })
            .collect();
        let Some(addr) = vetted.first().copied() else {
            let reason = format!(
                "`{}` resolves to {}, which this plugin's grant does not allow (allow_loopback / allow_private)",
                target.host,
                refused.join(", ")
            );
            return Err(self.http_refuse(reason, json!({ "url": shown_url, "addresses": refused })));
        };

        // Fill secrets, audit each use before the request leaves.
        let mut secret_values: Vec<Zeroizing<Vec<u8>>> = Vec::new();
        let mut builder = hyper::Request::builder()
            .method(method)
            .uri(&target.path_and_query)
            .header(hyper::header::HOST, &target.authority);
        let mut used = Vec::new();
        for (name, source) in headers {
            match source {
                HeaderSource::Text(v) => {
                    let Ok(v) = hyper::header::HeaderValue::from_str(&v) else {
                        return Err(CapabilityError::InvalidArgument(format!(
                            "the value of `{name}` is not a valid header value"
                        )));
                    };
                    builder = builder.header(name, v);
                }
                HeaderSource::Secret(handle, secret, template) => {
                    let value = self.secrets.value(handle)?;
                    let (before, after) = template.split_once("{secret}").unwrap_or((&template, ""));
                    let mut filled = Zeroizing::new(Vec::with_capacity(before.len() + value.len() + after.len()));
                    filled.extend_from_slice(before.as_bytes());
                    filled.extend_from_slice(&value);
                    filled.extend_from_slice(after.as_bytes());
                    let Ok(mut hv) = hyper::header::HeaderValue::from_bytes(&filled) else {
                        return Err(CapabilityError::InvalidArgument(format!(
                            "secret `{secret}` cannot be a header value (control characters)"
                        )));
                    };
                    hv.set_sensitive(true);
                    builder = builder.header(name.clone(), hv);
                    used.push((secret, name.to_string(), template));
                    secret_values.push(value);
                }
            }
        }
        if let Some(name) = &url_secret_name {
            used.push((name.clone(), "url".to_owned(), shown_url.clone()));
        }
        for (secret, header, template) in &used {
            self.record(
                AuditEvent::new(ActorKind::Plugin, self.actor(), action::SECRET_USED, Outcome::Success)
                    .resource(format!("secret:{secret}"))
                    .payload(json!({
                        "secret": secret, "purpose": "http-header", "header": header, "template": template,
                        "origin": origin,
                    })),
            )
            .await?;
        }
        let body_len = request.body.len();
        let Ok(req) = builder.body(Full::new(Bytes::from(request.body))) else {
            return Err(CapabilityError::InvalidArgument("the request cannot be built".into()));
        };

        let remaining = self.http.deadline.saturating_duration_since(Instant::now());
        let result = exchange(&target, addr, req, &grant, remaining).await;
        let duration = started.elapsed();
        let (outcome, status, bytes_in, error) = match &result {
            Ok((status, _, body)) => (Outcome::Success, Some(*status), body.len(), None),
            Err(e) => (Outcome::Error, None, 0, Some(e.to_string())),
        };
        self.http.bytes_out += body_len as u64;
        self.http.bytes_in += bytes_in as u64;
        self.record(
            AuditEvent::new(ActorKind::Plugin, self.actor(), action::CAPABILITY_HTTP, outcome)
                .resource(format!("http:{origin}"))
                .payload(json!({
                    "method": method, "url": shown_url, "address": addr.to_string(), "status": status,
                    "bytes_out": body_len, "bytes_in": bytes_in,
                    "duration_us": u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
                    "secrets": used.iter().map(|u| u.0.clone()).collect::<Vec<_>>(), "error": error,
                })),
        )
        .await?;
        let (status, headers, body) = result?;
        // A server that echoes credentials must not hand them to the plugin.
        let mut body = body.to_vec();
        let mut headers = headers;
        secret_values.extend(url_secret_value);
        for v in &secret_values {
            body = redact(&body, v);
            for (_, hv) in &mut headers {
                *hv = String::from_utf8_lossy(&redact(hv.as_bytes(), v)).into_owned();
            }
        }
        Ok(Response { status, headers, body })
    }
}

enum HeaderSource {
    Text(String),
    Secret(u32, String, String),
}

type Exchanged = (u16, Vec<(String, String)>, Bytes);

async fn exchange(
    target: &Target,
    addr: SocketAddr,
    req: hyper::Request<Full<Bytes>>,
    grant: &Grant,
    remaining: Duration,
) -> Result<Exchanged, CapabilityError> {
    let unavailable = |m: String| CapabilityError::Unavailable(m);
    let connect_budget = grant.connect_timeout.min(remaining);
    let tcp = tokio::time::timeout(connect_budget, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            unavailable(format!(
                "connecting to {addr} timed out after {} ms",
                connect_budget.as_millis()
            ))
        })?
        .map_err(|e| unavailable(format!("cannot connect to {addr}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let response_budget = grant
        .response_timeout
        .min(remaining.saturating_sub(Duration::from_millis(1)));
    let work = async {
        let sender = if target.scheme == "https" {
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(target.host.clone())
                .map_err(|e| unavailable(format!("`{}` is not a TLS server name: {e}", target.host)))?;
            let tls = tokio_rustls::TlsConnector::from(tls_config())
                .connect(name, tcp)
                .await
                .map_err(|e| unavailable(format!("TLS with {} failed: {e}", target.host)))?;
            handshake(hyper_util::rt::TokioIo::new(tls)).await?
        } else {
            handshake(hyper_util::rt::TokioIo::new(tcp)).await?
        };
        let mut sender = sender;
        let response = sender.send_request(req).await.map_err(|e| {
            unavailable(format!(
                "the request failed (it may or may not have reached the server): {e}"
            ))
        })?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = Limited::new(response.into_body(), grant.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    CapabilityError::QuotaExceeded(format!(
                        "the response body is over the {}-byte limit (max_response_bytes)",
                        grant.max_response_bytes
                    ))
                } else {
                    unavailable(format!("reading the response failed: {e}"))
                }
            })?
            .to_bytes();
        Ok::<_, CapabilityError>((status, headers, body))
    };
    tokio::time::timeout(response_budget, work).await.map_err(|_| {
        unavailable(format!(
            "no complete response within {} ms (the request may have reached the server)",
            response_budget.as_millis()
        ))
    })?
}

async fn handshake<T>(io: T) -> Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>, CapabilityError>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| CapabilityError::Unavailable(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_ranges() {
        let b = |s: &str| blocked(s.parse().unwrap(), false, false);
        assert_eq!(b("127.0.0.1"), Some("loopback"));
        assert_eq!(b("10.1.2.3"), Some("private"));
        assert_eq!(b("172.16.0.1"), Some("private"));
        assert_eq!(b("192.168.1.1"), Some("private"));
        assert_eq!(b("100.64.0.1"), Some("CGNAT"));
        assert_eq!(b("169.254.169.254"), Some("link-local (cloud metadata)"));
        assert_eq!(b("0.0.0.0"), Some("unspecified"));
        assert_eq!(b("224.0.0.1"), Some("multicast or reserved"));
        assert_eq!(b("::1"), Some("loopback"));
        assert_eq!(b("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(b("fe80::1"), Some("link-local"));
        assert_eq!(b("fd00::1"), Some("private"));
        assert_eq!(b("64:ff9b::a9fe:a9fe"), Some("NAT64"));
        assert_eq!(b("8.8.8.8"), None);
        assert_eq!(b("2606:4700::1111"), None);
        assert_eq!(blocked("127.0.0.1".parse().unwrap(), true, false), None);
        assert_eq!(
            blocked("169.254.169.254".parse().unwrap(), true, false),
            Some("link-local (cloud metadata)")
        );
        assert_eq!(blocked("10.0.0.1".parse().unwrap(), false, true), None);
    }

    #[test]
    fn credential_headers() {
        for h in [
            "authorization",
            "cookie",
            "apca-api-key-id",
            "apca-api-secret-key",
            "x-mbx-apikey",
            "x-auth-token",
            "ok-access-passphrase",
        ] {
            assert!(is_credential_header(h), "{h}");
        }
        for h in ["content-type", "accept", "x-request-id", "user-agent"] {
            assert!(!is_credential_header(h), "{h}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(redact(b"xxSECRETyySECRET", b"SECRET"), b"xx[REDACTED]yy[REDACTED]");
        assert_eq!(
            redact_url("https://a.example/v1/orders?sig=abc"),
            "https://a.example/v1/orders?…"
        );
    }
}
