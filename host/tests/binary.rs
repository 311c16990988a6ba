//! The real `algobanana` binary: `serve` on an empty data dir initialises
//! it, prints the token and the bound address, serves an alert over a real
//! socket, and shuts down cleanly on SIGTERM with `system.stop` audited.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn post(addr: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn serve_initialises_serves_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_algobanana"))
        .args(["serve", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut token, mut addr) = (None, None);
    let deadline = Instant::now() + Duration::from_secs(120);
    while addr.is_none() && Instant::now() < deadline {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(t) = line.strip_prefix("hook token (shown only now; store it somewhere safe): ") {
            token = Some(t.to_owned());
        }
        if let Some(a) = line.strip_prefix("listening on http://") {
            addr = Some(a.to_owned());
        }
    }
    let (token, addr) = (token.expect("token printed"), addr.expect("address printed"));
    assert!(!addr.ends_with(":0"), "the real port is printed: {addr}");

    let reply = post(&addr, &format!("/v1/hooks/{token}"), "buy 3 AAPL at 101.25");
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.contains("\"outcome\":\"filled\""), "{reply}");
    assert!(reply.contains("\"average_fill_price\":\"101.25\""), "{reply}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "clean shutdown: {exit:?}");

    let out = Command::new(env!("CARGO_BIN_EXE_algobanana"))
        .args([
            "audit",
            "search",
            "--data-dir",
            data.to_str().unwrap(),
            "--json",
            "--action",
            "system.*",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let actions: Vec<String> = text
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["action"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(actions, ["system.start", "system.stop"]);
}

#[test]
fn a_broken_config_exits_non_zero_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("algobanana.toml"), "[server]\nlisten = \"nope\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_algobanana"))
        .args(["serve", "--data-dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("algobanana.toml"), "{err}");
    assert!(err.contains("server.listen: `nope` is not an address"), "{err}");
}
