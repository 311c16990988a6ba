//! Test support: [`TestHost`] starts the real host on `127.0.0.1:0` over a
//! temporary data dir, with plugins built from `plugins/` source, and a
//! small HTTP client that speaks to it over a real socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use algobanana::app::{App, AppOptions};
use algobanana::audit::query::{self, AuditRecord, Filter};
use anyhow::Context as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use sha2::{Digest, Sha256};

pub mod alpaca;
pub mod binance;
#[path = "../custom_section.rs"]
pub mod custom_section;

/// Paths of the built plugins and `foreach_plugin!`.
pub mod plugins {
    include!(concat!(env!("OUT_DIR"), "/plugins.rs"));
}

/// A plugin to install in a test host.
#[derive(Debug, Clone)]
pub struct PluginSpec {
    name: String,
    source: String,
    world: &'static str,
    limits: Vec<(String, i64)>,
    grant: String,
}

/// A route to configure.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    name: String,
    rule: String,
    broker: String,
    rule_config: serde_json::Value,
    broker_settings: serde_json::Value,
    extra: String,
}

/// Builds a [`TestHost`].
#[derive(Debug, Clone)]
pub struct HostBuilder {
    plugins: Vec<PluginSpec>,
    routes: Vec<RouteSpec>,
    options: AppOptions,
    extra_toml: String,
    vault: Option<Vec<(String, String)>>,
}

impl Default for HostBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl HostBuilder {
    /// The defaults of `algobanana init`: built-in tradingview and paper,
    /// and a `default` route between them.
    pub fn new() -> Self {
        Self {
            plugins: Vec::new(),
            routes: Vec::new(),
            options: AppOptions::default(),
            extra_toml: String::new(),
            vault: None,
        }
        .builtin("tradingview", "rule")
        .builtin("paper", "broker")
        .route("default", "tradingview", "paper")
    }

    /// Adds a built-in plugin.
    pub fn builtin(mut self, name: &str, world: &'static str) -> Self {
        self.plugins.push(PluginSpec {
            name: name.into(),
            source: format!("builtin:{name}"),
            world,
            limits: Vec::new(),
            grant: String::new(),
        });
        self
    }

    /// Adds a plugin from a component file (one of [`plugins`]' constants).
    pub fn plugin(mut self, name: &str, path: &str, world: &'static str) -> Self {
        self.plugins.push(PluginSpec {
            name: name.into(),
            source: path.into(),
            world,
            limits: Vec::new(),
            grant: String::new(),
        });
        self
    }

    /// Sets a limit of the last added plugin (`deadline_ms`, `memory_mib`, …).
    pub fn limit(mut self, key: &str, value: i64) -> Self {
        self.plugins
            .last_mut()
            .expect("add a plugin first")
            .limits
            .push((key.into(), value));
        self
    }

    /// Sets the grant of the last added plugin: TOML lines for its
    /// `[plugins.NAME.grant]` table.
    pub fn grant(mut self, toml_lines: &str) -> Self {
        self.plugins.last_mut().expect("add a plugin first").grant = toml_lines.into();
        self
    }

    /// Adds a route.
    pub fn route(mut self, name: &str, rule: &str, broker: &str) -> Self {
        self.routes.push(RouteSpec {
            name: name.into(),
            rule: rule.into(),
            broker: broker.into(),
            rule_config: serde_json::json!({}),
            broker_settings: serde_json::json!({}),
            extra: String::new(),
        });
        self
    }

    /// More TOML lines for the last route's table (webhook guards, say).
    /// Test routes are not rate limited unless these lines say so.
    pub fn route_toml(mut self, lines: &str) -> Self {
        self.routes.last_mut().expect("add a route first").extra.push_str(lines);
        self
    }

    /// Sets the last route's rule config.
    pub fn rule_config(mut self, config: serde_json::Value) -> Self {
        self.routes.last_mut().expect("add a route first").rule_config = config;
        self
    }

    /// Sets the last route's broker settings.
    pub fn broker_settings(mut self, settings: serde_json::Value) -> Self {
        self.routes.last_mut().expect("add a route first").broker_settings = settings;
        self
    }

    /// Host options (e.g. a small audit page cap).
    pub fn options(mut self, options: AppOptions) -> Self {
        self.options = options;
        self
    }

    /// A vault in the data dir, opened by `keys/vault.key` as `init` makes
    /// it, holding these secrets.
    pub fn vault(mut self, secrets: &[(&str, &str)]) -> Self {
        self.vault = Some(
            secrets
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
        );
        self
    }

    /// Extra TOML appended to the config (e.g. a `[server]` table).
    pub fn toml(mut self, text: &str) -> Self {
        self.extra_toml.push_str(text);
        self
    }

    /// Writes the config into a fresh temporary data dir; returns the dir and
    /// each route's hook token.
    ///
    /// # Errors
    /// I/O errors.
    pub fn write(&self) -> anyhow::Result<(tempfile::TempDir, HashMap<String, String>)> {
        let dir = tempfile::tempdir()?;
        let mut text = String::new();
        for p in &self.plugins {
            text.push_str(&format!(
                "[plugins.{}]\nsource = {:?}\nworld = {:?}\n",
                p.name, p.source, p.world
            ));
            if !p.limits.is_empty() {
                text.push_str(&format!("[plugins.{}.limits]\n", p.name));
                for (k, v) in &p.limits {
                    text.push_str(&format!("{k} = {v}\n"));
                }
            }
            if !p.grant.is_empty() {
                text.push_str(&format!("[plugins.{}.grant]\n{}\n", p.name, p.grant));
            }
            text.push('\n');
        }
        let mut tokens = HashMap::new();
        for r in &self.routes {
            let token = format!("abh_test_{}_{}", r.name, uuid::Uuid::now_v7().simple());
            let hash = hex::encode(Sha256::digest(token.as_bytes()));
            // Test brokers other than the built-in paper one trade nothing
            // real; the config must say so (`live = false`).
            let paper = self
                .plugins
                .iter()
                .any(|p| p.name == r.broker && p.source == "builtin:paper");
            text.push_str(&format!(
                "[[routes]]\nname = {:?}\nhook_token_sha256 = {:?}\nrule = {:?}\nbroker = {:?}\nrule_config = {}\nbroker_settings = {}\n{}{}\n",
                r.name,
                hash,
                r.rule,
                r.broker,
                inline_table(&r.rule_config)?,
                inline_table(&r.broker_settings)?,
                if paper { "" } else { "live = false\n" },
                if r.extra.contains("rate_limit_per_minute") {
                    r.extra.clone()
                } else {
                    format!("rate_limit_per_minute = 0\n{}", r.extra)
                },
            ));
            tokens.insert(r.name.clone(), token);
        }
        text.push_str(&with_test_budget(&self.extra_toml));
        std::fs::write(dir.path().join(algobanana::config::CONFIG_FILE), text)?;
        if let Some(secrets) = &self.vault {
            use algobanana::vault::{DEFAULT_KEY_FILE, KdfParams, Unlock, Vault, unlock};
            let key = dir.path().join(DEFAULT_KEY_FILE);
            unlock::create_key_file(&key)?;
            let v = Vault::create(
                &Vault::path_in(dir.path()),
                &Unlock::none().with_key_file(&key),
                KdfParams::default(),
            )?;
            for (n, value) in secrets {
                v.set(n, value.as_bytes())?;
            }
        }
        Ok((dir, tokens))
    }

    /// Starts the host on 127.0.0.1:0.
    ///
    /// # Errors
    /// When the host refuses to start (the error says why).
    pub async fn start(self) -> anyhow::Result<TestHost> {
        let (dir, tokens) = self.write()?;
        TestHost::start_in(dir, tokens, self.options).await
    }
}

/// The response budget of test hosts unless a test sets its own.
///
/// Tests read an alert's outcome from its answer. With the whole suite on
/// two cores a first alert sometimes took longer than the default 2.5 s
/// budget and was answered 202 ("still processing"): the host's contract,
/// not a failure, yet the test then failed reading an outcome that was not
/// in the answer. The tests of the 202 itself set a short budget.
pub const TEST_RESPONSE_BUDGET_MS: u64 = 30_000;

/// `extra` (the config's extra TOML) with `response_budget_ms` set in its
/// `[trading]` table (made if missing), unless it sets it already.
fn with_test_budget(extra: &str) -> String {
    let line = format!("response_budget_ms = {TEST_RESPONSE_BUDGET_MS}\n");
    if extra.contains("response_budget_ms") {
        return extra.to_owned();
    }
    match extra.find("[trading]\n") {
        Some(at) => {
            let after = at + "[trading]\n".len();
            format!("{}{line}{}", &extra[..after], &extra[after..])
        }
        None => format!("{extra}\n[trading]\n{line}"),
    }
}

/// JSON as TOML, by hand: with serde_json's `arbitrary_precision` a JSON
/// number serialises as a private map, which `toml::Value::try_from` would
/// turn into a table.
fn to_toml(v: &serde_json::Value) -> anyhow::Result<toml::Value> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => anyhow::bail!("TOML has no null"),
        J::Bool(b) => toml::Value::Boolean(*b),
        J::Number(n) => match n.as_i64() {
            Some(i) => toml::Value::Integer(i),
            None => toml::Value::Float(n.to_string().parse().context("number")?),
        },
        J::String(s) => toml::Value::String(s.clone()),
        J::Array(a) => toml::Value::Array(a.iter().map(to_toml).collect::<anyhow::Result<_>>()?),
        J::Object(o) => toml::Value::Table(
            o.iter()
                .map(|(k, v)| Ok((k.clone(), to_toml(v)?)))
                .collect::<anyhow::Result<_>>()?,
        ),
    })
}

fn inline_table(v: &serde_json::Value) -> anyhow::Result<String> {
    let value = to_toml(v).context("rule config must be a JSON object")?;
    let table = value.as_table().context("rule config must be a JSON object")?;
    let mut out = String::from("{ ");
    for (i, (k, v)) in table.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&format!("{k} = {v}"));
    }
    out.push_str(" }");
    Ok(out)
}

/// A running host.
#[derive(Debug)]
pub struct TestHost {
    /// The data dir (deleted on drop).
    pub dir: tempfile::TempDir,
    /// The bound address.
    pub addr: SocketAddr,
    /// The app.
    pub app: Arc<App>,
    /// Hook token per route name.
    pub tokens: HashMap<String, String>,
    server: Option<algobanana::RunningServer>,
}

/// An HTTP response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers (lower-case names).
    pub headers: HashMap<String, String>,
    /// Body bytes.
    pub body: Bytes,
}

impl Reply {
    /// The body as JSON.
    ///
    /// # Panics
    /// When it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
}

impl TestHost {
    /// Starts the host with the defaults of `algobanana init`.
    ///
    /// # Errors
    /// When the host refuses to start.
    pub async fn start() -> anyhow::Result<Self> {
        HostBuilder::new().start().await
    }

    /// Starts a host on an existing data dir.
    ///
    /// # Errors
    /// When the host refuses to start.
    pub async fn start_in(
        dir: tempfile::TempDir,
        tokens: HashMap<String, String>,
        options: AppOptions,
    ) -> anyhow::Result<Self> {
        let app = App::open(dir.path(), options).await?;
        let server = app.serve("127.0.0.1:0".parse()?).await?;
        Ok(Self {
            dir,
            addr: server.addr,
            app,
            tokens,
            server: Some(server),
        })
    }

    /// The hook path of `route`.
    pub fn hook(&self, route: &str) -> String {
        format!("/v1/hooks/{}", self.tokens[route])
    }

    /// POSTs `body` to the hook of `route`.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn alert(&self, route: &str, content_type: &str, body: &str) -> anyhow::Result<Reply> {
        self.request(
            "POST",
            &self.hook(route),
            &[("content-type", content_type)],
            body.as_bytes().to_vec(),
        )
        .await
    }

    /// Sends one request over a fresh connection.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> anyhow::Result<Reply> {
        send(self.addr, method, path, headers, body).await
    }

    /// Audit events matching `filter`.
    ///
    /// # Errors
    /// Database errors.
    pub fn audit(&self, filter: &Filter) -> anyhow::Result<Vec<AuditRecord>> {
        Ok(query::search(
            &self.dir.path().join(algobanana::audit::AUDIT_DB),
            filter,
        )?)
    }

    /// Every audit event of one alert.
    ///
    /// # Errors
    /// Database errors.
    pub fn audit_of(&self, alert_id: &str) -> anyhow::Result<Vec<AuditRecord>> {
        self.audit(&Filter {
            correlation_id: Some(alert_id.into()),
            ..Filter::default()
        })
    }

    /// Every order in `state.db` (the open batch included), oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn orders(&self) -> anyhow::Result<Vec<algobanana::trading::orders::OrderRow>> {
        let mut all = self
            .app
            .orders
            .list(&algobanana::trading::orders::OrderQuery::default())?;
        all.reverse();
        Ok(all)
    }

    /// The data dir.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Stops the server (records `system.stop`); returns the data dir.
    pub async fn stop(mut self) -> (tempfile::TempDir, HashMap<String, String>) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
        (self.dir, self.tokens)
    }
}

/// Sends one HTTP/1.1 request to `addr` over a fresh connection.
///
/// # Errors
/// Connection errors.
pub async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> anyhow::Result<Reply> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body)))?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req)).await??;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Reply { status, headers, body })
}

/// Polls `f` every 10 ms until it returns `Some` or `timeout` passes.
///
/// # Errors
/// When the deadline passes.
pub async fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("condition not met within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The path of a file in the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// Where the criterion benchmarks write and read their estimates:
/// `$CRITERION_HOME`, else `$CARGO_TARGET_DIR/criterion`, else the
/// repository's `target/criterion`. The benches pass it to criterion
/// (`output_directory`) and read their summary back from it, so the two
/// agree whether the bench runs under `cargo bench` or as a bare binary
/// (criterion's own default then falls back to `./target` of the current
/// directory).
pub fn criterion_dir() -> PathBuf {
    std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(|t| PathBuf::from(t).join("criterion")))
        .unwrap_or_else(|| repo_path("target/criterion"))
}

/// The median (ns) of one criterion benchmark `group/name` from its latest
/// run in [`criterion_dir`]; `None`, with the reason on stderr, when the
/// estimates cannot be read.
pub fn criterion_median_ns(group: &str, name: &str) -> Option<f64> {
    let path = criterion_dir().join(group).join(name).join("new/estimates.json");
    let read = std::fs::read_to_string(&path)
        .map_err(|e| e.to_string())
        .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).map_err(|e| e.to_string()))
        .and_then(|v| {
            v["median"]["point_estimate"]
                .as_f64()
                .ok_or_else(|| "it has no median.point_estimate".to_owned())
        });
    match read {
        Ok(median) => Some(median),
        Err(e) => {
            eprintln!("no summary for {group}/{name}: cannot read {}: {e}", path.display());
            None
        }
    }
}

/// Serves HTTP/1.1 on 127.0.0.1:0 in the background: every request goes
/// to `handler`, which answers with a status, extra headers and a body.
/// The local servers the tests talk to (upstreams, fake brokers) use it.
///
/// # Panics
/// When it cannot bind.
pub async fn serve_local<H, F>(handler: H) -> SocketAddr
where
    H: Fn(hyper::Request<hyper::body::Incoming>) -> F + Clone + Send + Sync + 'static,
    F: std::future::Future<Output = (u16, Vec<(String, String)>, Bytes)> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move {
                        let (status, headers, body) = handler(req).await;
                        let mut resp = hyper::Response::new(Full::new(body));
                        *resp.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
                        for (k, v) in headers {
                            if let (Ok(k), Ok(v)) = (
                                hyper::header::HeaderName::from_bytes(k.as_bytes()),
                                hyper::header::HeaderValue::from_str(&v),
                            ) {
                                resp.headers_mut().insert(k, v);
                            }
                        }
                        Ok::<_, std::convert::Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// One request an [`Upstream`] received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Method.
    pub method: String,
    /// Path and query.
    pub uri: String,
    /// Headers (lower-case names).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// A local HTTP server on `127.0.0.1:0` that records every request and
/// answers 200 with a JSON echo of the request's headers (a server that
/// reflects credentials, the worst case for secret hygiene).
#[derive(Debug, Clone)]
pub struct Upstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Everything it received.
    pub received: Arc<std::sync::Mutex<Vec<Received>>>,
}

impl Upstream {
    /// Starts it.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> Self {
        Self::start_answering(200, None).await
    }

    /// Starts one that answers every request with `status` and `body`
    /// (instead of the header echo).
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start_answering(status: u16, answer: Option<&'static str>) -> Self {
        Self::start_flaky(0, 0, status, answer).await
    }

    /// Starts one that answers its first `failures` requests with
    /// `failing` (an empty body), and the rest as
    /// [`Upstream::start_answering`] does.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start_flaky(failures: usize, failing: u16, status: u16, answer: Option<&'static str>) -> Self {
        let received: Arc<std::sync::Mutex<Vec<Received>>> = Arc::default();
        let rec = received.clone();
        let addr = serve_local(move |req: hyper::Request<hyper::body::Incoming>| {
            let rec = rec.clone();
            async move {
                let method = req.method().to_string();
                let uri = req.uri().to_string();
                let headers: Vec<(String, String)> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes().to_vec())
                    .unwrap_or_default();
                let echo: Vec<String> = headers.iter().map(|(k, v)| format!("{k}: {v}")).collect();
                let reply_headers = echo
                    .iter()
                    .enumerate()
                    .map(|(i, v)| (format!("x-echo-{i}"), v.clone()))
                    .collect();
                let seen = {
                    let mut rec = rec.lock().unwrap();
                    rec.push(Received {
                        method,
                        uri,
                        headers,
                        body,
                    });
                    rec.len()
                };
                if seen <= failures {
                    return (failing, Vec::new(), Bytes::new());
                }
                let text = answer.map_or_else(|| serde_json::json!({ "headers": echo }).to_string(), str::to_owned);
                (status, reply_headers, Bytes::from(text))
            }
        })
        .await;
        Self { addr, received }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A copy of what it received.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A resolver that answers from a fixed table (the DNS-rebinding test maps
/// a public-looking name to 127.0.0.1).
#[derive(Debug, Clone, Default)]
pub struct MapResolver(pub HashMap<String, Vec<std::net::IpAddr>>);

impl algobanana::capabilities::http::Resolver for MapResolver {
    fn resolve(
        &self,
        host: String,
        port: u16,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>> {
        let found = self.0.get(&host).cloned();
        Box::pin(async move {
            found
                .map(|ips| ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        format!("{host}: not in the test resolver"),
                    )
                })
        })
    }
}

/// A `/proc/self/status` field in KiB (`"VmRSS:"`, `"VmHWM:"`); 0 where
/// there is no such file (benchmarks report memory from it on Linux).
pub fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::with_test_budget;

    #[test]
    fn the_test_budget_joins_the_trading_table_or_makes_one_and_never_overrides() {
        let set = with_test_budget("[trading]\ndedupe_window_s = 0\n");
        assert_eq!(set, "[trading]\nresponse_budget_ms = 30000\ndedupe_window_s = 0\n");
        let made = with_test_budget("[risk]\nmax_order_quantity = 10\n");
        let parsed: toml::Table = made.parse().unwrap();
        assert_eq!(parsed["trading"]["response_budget_ms"].as_integer(), Some(30_000));
        let own = "[trading]\nresponse_budget_ms = 50\n";
        assert_eq!(with_test_budget(own), own);
    }
}
