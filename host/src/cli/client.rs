//! A small admin API client for the CLI: `--server URL` with the token in
//! ALGOBANANA_TOKEN (or `--token-file`), over HTTP on loopback or HTTPS
//! (with `--ca-cert` for a private CA).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Args;
use http_body_util::{BodyExt as _, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// Where the running server is.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// A running server's base URL (e.g. http://127.0.0.1:8700); the
    /// command then goes through its admin API.
    #[arg(long, env = "ALGOBANANA_SERVER")]
    pub server: Option<String>,
    /// A file holding the API token (default: ALGOBANANA_TOKEN).
    #[arg(long, env = "ALGOBANANA_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// A PEM CA certificate to trust for an https server (a self-signed
    /// certificate, for instance).
    #[arg(long, env = "ALGOBANANA_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl ServerArgs {
    /// A client when `--server` is given.
    ///
    /// # Errors
    /// A bad URL or no token.
    pub fn client(&self) -> anyhow::Result<Option<Client>> {
        let Some(server) = &self.server else {
            return Ok(None);
        };
        let uri: hyper::Uri = server
            .parse()
            .with_context(|| format!("--server `{server}`: expected a URL such as http://127.0.0.1:8700"))?;
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => anyhow::bail!("--server `{server}`: the scheme must be http or https"),
        };
        let host = uri
            .host()
            .with_context(|| format!("--server `{server}` has no host"))?
            .to_owned();
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let token = match &self.token_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("cannot read the token file {}", f.display()))?
                .trim()
                .to_owned(),
            None => std::env::var("ALGOBANANA_TOKEN").map_err(|_| {
                anyhow::anyhow!("--server needs an API token: set ALGOBANANA_TOKEN or pass --token-file")
            })?,
        };
        Ok(Some(Client {
            host,
            port,
            tls,
            token,
            ca_cert: self.ca_cert.clone(),
        }))
    }
}

/// One server.
pub struct Client {
    host: String,
    port: u16,
    tls: bool,
    token: String,
    ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Client({}:{}, tls {})", self.host, self.port, self.tls)
    }
}

impl Client {
    /// Calls `method path` with an optional JSON body; returns the JSON
    /// answer (null for 204).
    ///
    /// # Errors
    /// Connection errors and non-2xx answers (with the server's message).
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let (status, text) = self.raw(method, path, body).await?;
        if !status.is_success() {
            let msg = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or(text);
            anyhow::bail!("the server answered {status}: {msg}");
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).or(Ok(Value::String(text)))
    }

    /// Calls and returns the status and body text.
    ///
    /// # Errors
    /// Connection errors.
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(hyper::StatusCode, String)> {
        let resp = self.response(method, path, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Calls and writes the answer's body to `out` as it arrives (an audit
    /// export can be larger than memory); returns the status. A body that
    /// does not end with a newline gets one.
    ///
    /// # Errors
    /// Connection errors, a transfer cut short, and write errors.
    pub async fn stream(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        out: &mut (dyn std::io::Write + Send),
    ) -> anyhow::Result<hyper::StatusCode> {
        let resp = self.response(method, path, body).await?;
        let status = resp.status();
        let mut body = resp.into_body();
        let mut last = b'\n';
        while let Some(frame) = body.frame().await {
            let frame = frame.context("the server's answer was cut short")?;
            if let Some(data) = frame.data_ref()
                && let Some(&b) = data.last()
            {
                out.write_all(data)?;
                last = b;
            }
        }
        if last != b'\n' {
            out.write_all(b"\n")?;
        }
        out.flush()?;
        Ok(status)
    }

    async fn response(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<hyper::Response<hyper::body::Incoming>> {
        let addr = format!("{}:{}", self.host, self.port);
        let tcp = tokio::net::TcpStream::connect(&addr)
            .await
            .with_context(|| format!("cannot connect to {addr}; is the server running?"))?;
        let body_bytes = body.map(|b| serde_json::to_vec(&b)).transpose()?.unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.host)
            .header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(
                hyper::header::USER_AGENT,
                concat!("algobanana-cli/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(bytes::Bytes::from(body_bytes)))?;
        let resp = if self.tls {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            if let Some(ca) = &self.ca_cert {
                use tokio_rustls::rustls::pki_types::CertificateDer;
                use tokio_rustls::rustls::pki_types::pem::PemObject as _;
                for cert in CertificateDer::pem_file_iter(ca)
                    .with_context(|| format!("cannot read --ca-cert {}", ca.display()))?
                {
                    roots
                        .add(cert.with_context(|| format!("--ca-cert {}: not a PEM certificate", ca.display()))?)
                        .context("--ca-cert")?;
                }
            }
            let config = tokio_rustls::rustls::ClientConfig::builder_with_provider(Arc::new(
                tokio_rustls::rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = tokio_rustls::rustls::pki_types::ServerName::try_from(self.host.clone())
                .with_context(|| format!("`{}` is not a valid server name", self.host))?;
            let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {addr} failed"))?;
            send(TokioIo::new(stream), req).await?
        } else {
            send(TokioIo::new(tcp), req).await?
        };
        Ok(resp)
    }
}

async fn send<T>(io: T, req: Request<Full<bytes::Bytes>>) -> anyhow::Result<hyper::Response<hyper::body::Incoming>>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await.context("the request failed")
}
