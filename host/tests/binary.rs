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
    let (server, token) = start(&data);
    let (mut child, addr) = (server.child, server.addr);
    let token = token.expect("token printed");
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

/// Output to a reader that went away (`algobanana … | head`) ends the
/// command quietly, as in ripgrep, not with "error: Broken pipe".
#[test]
fn a_closed_output_pipe_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (code, out) = cli(&["init", "--data-dir", data.to_str().unwrap()], &[], None);
    assert_eq!(code, 0, "{out}");
    // The read end is closed before the command starts, so its first write
    // fails, however small the output.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_algobanana"))
        .args(["audit", "search", "--data-dir", data.to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

struct Server {
    child: std::process::Child,
    addr: String,
}

fn start(data: &std::path::Path) -> (Server, Option<String>) {
    start_with(data, &[], Stdio::null())
}

/// `serve` on 127.0.0.1:0 with `env`; returns once it prints its address.
fn start_with(data: &std::path::Path, env: &[(&str, &str)], stderr: Stdio) -> (Server, Option<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_algobanana"));
    cmd.args(["serve", "--data-dir", data.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .env_remove("ALGOBANANA_VAULT_PASSPHRASE")
        .stdout(Stdio::piped())
        .stderr(stderr);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut token, mut addr) = (None, None);
    while addr.is_none() {
        let Some(Ok(line)) = lines.next() else { break };
        if let Some(t) = line.strip_prefix("hook token (shown only now; store it somewhere safe): ") {
            token = Some(t.to_owned());
        }
        if let Some(a) = line.strip_prefix("listening on http://") {
            addr = Some(a.to_owned());
        }
    }
    // Keep draining stdout so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (
        Server {
            child,
            addr: addr.expect("address printed"),
        },
        token,
    )
}

/// A new data dir at `data` holding one alert, its server stopped cleanly.
fn one_alert_then_stop(data: &std::path::Path) {
    let (mut server, token) = start(data);
    let reply = post(
        &server.addr,
        &format!("/v1/hooks/{}", token.unwrap()),
        "buy 2 MSFT at 300",
    );
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(server.child.wait().unwrap().success());
}

fn audit_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_algobanana"))
        .arg("audit")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

/// kill -9 while clients stream alerts: after a restart every alert that got
/// a 2xx has its events, and `audit verify` passes.
#[test]
fn kill_9_while_streaming_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, token) = start(&data);
    let token = token.expect("token printed on first start");
    let path = format!("/v1/hooks/{token}");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|c| {
            let (addr, path, stop) = (server.addr.clone(), path.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    i += 1;
                    let body = format!("buy 1 AAPL at {}.{c}{i}", 100 + i % 50);
                    let Ok(mut s) = TcpStream::connect(&addr) else { break };
                    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
                    let req = format!(
                        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    if s.write_all(req.as_bytes()).is_err() {
                        break;
                    }
                    let mut reply = String::new();
                    let _ = s.read_to_string(&mut reply);
                    if reply.starts_with("HTTP/1.1 2") {
                        let json = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
                        let v: serde_json::Value = serde_json::from_str(json).unwrap();
                        acked.push(v["alert_id"].as_str().unwrap().to_owned());
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    server.child.kill().unwrap(); // SIGKILL: no shutdown code runs.
    server.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked: Vec<String> = clients.into_iter().flat_map(|c| c.join().unwrap()).collect();
    assert!(
        acked.len() > 20,
        "the clients got answers before the kill: {}",
        acked.len()
    );

    // Restart (recovers the WAL and signs a start checkpoint), then stop.
    let (mut server, _) = start(&data);
    let reply = post(&server.addr, &path, "buy 1 AAPL at 1");
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "serving again after the crash: {reply}"
    );
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(server.child.wait().unwrap().success());

    let d = data.to_str().unwrap();
    let (code, text) = audit_cli(&["verify", "--data-dir", d]);
    assert_eq!(code, 0, "verify passes after kill -9:\n{text}");
    assert!(text.contains("RESULT: INTACT"), "{text}");
    let (code, text) = audit_cli(&["search", "--data-dir", d, "--json", "--action", "alert.*"]);
    assert_eq!(code, 0, "{text}");
    let mut received = std::collections::HashSet::new();
    let mut processed = std::collections::HashSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let id = v["correlation_id"].as_str().unwrap_or_default().to_owned();
        match v["action"].as_str().unwrap() {
            "alert.received" => received.insert(id),
            "alert.processed" => processed.insert(id),
            _ => false,
        };
    }
    for id in &acked {
        assert!(received.contains(id), "acknowledged alert {id} has alert.received");
        assert!(processed.contains(id), "acknowledged alert {id} has alert.processed");
    }
    // And state.db agrees: an answer came only after its alert's batch was
    // committed, and what the kill took (alerts not yet answered) was
    // restored from the audit log and run at the restart.
    let conn = rusqlite::Connection::open(data.join("state.db")).unwrap();
    for id in &acked {
        let status: String = conn
            .query_row("SELECT status FROM alert WHERE id = ?1", [id], |r| r.get(0))
            .unwrap_or_else(|e| panic!("acknowledged alert {id} has its row: {e}"));
        assert_eq!(status, "processed", "alert {id}");
    }
    let left: i64 = conn
        .query_row("SELECT count(*) FROM alert WHERE status = 'received'", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0, "every alert the kill interrupted ran at the restart");
    let unknown: i64 = conn
        .query_row(
            "SELECT count(*) FROM orders WHERE state IN ('intent', 'unknown')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unknown, 0, "every order the kill interrupted was asked of the broker");
    for id in &received {
        assert!(
            processed.contains(id),
            "alert {id}, received before the kill, ran to its end after the restart"
        );
    }
}

/// `audit verify` exit codes: 0 intact, 1 tampered, 2 could not verify;
/// `--json` gives one machine-readable object.
#[test]
fn audit_verify_exit_codes_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    one_alert_then_stop(&data);
    let d = data.to_str().unwrap();

    let witness = dir.path().join("witness.txt");
    let (code, text) = audit_cli(&["witness", "--data-dir", d, "--to", witness.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("appended"), "{text}");

    let (code, text) = audit_cli(&[
        "verify",
        "--data-dir",
        d,
        "--json",
        "--witness",
        witness.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["result"], "intact");
    assert!(v["events"].as_u64().unwrap() >= 5, "{v}");

    let export = dir.path().join("export.jsonl");
    let (code, text) = audit_cli(&[
        "export",
        "--data-dir",
        d,
        "--format",
        "jsonl",
        "--out",
        export.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = audit_cli(&["verify", "--export", export.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");

    // Change one event's outcome behind the triggers' back.
    let conn = rusqlite::Connection::open(data.join("audit.db")).unwrap();
    conn.execute_batch("DROP TRIGGER audit_no_update; UPDATE audit_event SET outcome = 'deny' WHERE seq = 2;")
        .unwrap();
    drop(conn);
    let (code, text) = audit_cli(&["verify", "--data-dir", d]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("TAMPERED seq 2"), "{text}");
    assert!(text.contains("First bad sequence number: 2"), "{text}");
    let (code, text) = audit_cli(&["verify", "--data-dir", d, "--json"]);
    assert_eq!(code, 1, "{text}");
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(v["result"], "tampered");
    assert_eq!(v["first_bad_seq"], 2);
    assert_eq!(v["findings"][0]["class"], "TAMPERED");

    // Nothing to verify: exit 2 with the reason.
    let (code, text) = audit_cli(&["verify", "--data-dir", dir.path().join("nope").to_str().unwrap()]);
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("could not verify"), "{text}");
}

/// The emergency stop waits for a busy state database instead of failing
/// after SQLite's usual 5 s: here another writer holds it for 6 s.
#[test]
fn the_kill_switch_waits_out_a_busy_state_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let (code, out) = cli(&["init", "--data-dir", d], &[], None);
    assert_eq!(code, 0, "{out}");
    let (locked, release) = std::sync::mpsc::channel();
    let holder = {
        let db = data.join("state.db");
        std::thread::spawn(move || {
            let conn = rusqlite::Connection::open(db).unwrap();
            conn.execute_batch("BEGIN IMMEDIATE").unwrap();
            locked.send(()).unwrap();
            std::thread::sleep(std::time::Duration::from_secs(6));
            conn.execute_batch("COMMIT").unwrap();
        })
    };
    release.recv().unwrap();
    let started = std::time::Instant::now();
    let (code, out) = cli(&["kill-switch", "on", "--data-dir", d, "--reason", "test"], &[], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kill switch: off → on"), "{out}");
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(5),
        "it waited for the lock"
    );
    holder.join().unwrap();
    let (code, out) = cli(&["kill-switch", "status", "--data-dir", d], &[], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("kill switch: on"), "{out}");
}

/// `audit prune` with the server stopped: archives, records the cut and
/// deletes the rows before it returns, saying how many.
#[test]
fn audit_prune_archives_and_removes_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    one_alert_then_stop(&data);
    let d = data.to_str().unwrap();
    let events = |sql: &str| -> i64 {
        let conn = rusqlite::Connection::open(data.join("audit.db")).unwrap();
        conn.query_row(sql, [], |r| r.get(0)).unwrap()
    };
    let before = events("SELECT count(*) FROM audit_event");
    assert!(before >= 5, "{before}");

    // Everything up to the stop checkpoint is older than a second from now.
    let until = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1);
    let archive = dir.path().join("old.jsonl");
    let (code, text) = audit_cli(&[
        "prune",
        "--data-dir",
        d,
        "--before",
        &until.to_string(),
        "--archive",
        archive.to_str().unwrap(),
        "--policy",
        "test",
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&format!("pruned seq 0–{}", before - 1)), "{text}");
    assert!(text.contains(&format!("removed {before} rows")), "{text}");
    // Only the prune's own event is left in the file.
    assert_eq!(events("SELECT count(*) FROM audit_event"), 1);
    assert_eq!(events("SELECT min(seq) FROM audit_event"), before);
    let (code, text) = audit_cli(&["verify", "--data-dir", d]);
    assert_eq!(code, 0, "{text}");
    let (code, text) = audit_cli(&["verify", "--export", archive.to_str().unwrap()]);
    assert_eq!(code, 0, "{text}");
}

#[path = "../build_plugins.rs"]
#[allow(dead_code)]
mod build_plugins;

/// kill -9 after the intent is recorded and while the broker call runs:
/// after the restart the host asks the broker by client order id and does
/// not order twice (the resumed alert finds the order as a duplicate).
#[test]
fn kill_9_between_the_intent_and_the_broker_answer_never_orders_twice() {
    // The fixture broker spins for 4 s in place-order, then would accept;
    // `has_order = false`: the broker never got it.
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned();
    let wasm = build_plugins::build(&root, &["http-probe"]).join("http_probe.wasm");
    assert!(wasm.exists(), "{}", wasm.display());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = Command::new(env!("CARGO_BIN_EXE_algobanana"))
        .args(["init", "--data-dir", data.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["hook_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let config_path = data.join("algobanana.toml");
    let config = std::fs::read_to_string(&config_path).unwrap();
    let config = config.replace("broker = \"paper\"", "broker = \"probe\"\nlive = false")
        + &format!(
            "\n[plugins.probe]\nsource = {:?}\nworld = \"broker\"\n[plugins.probe.grant]\nhttp = [\"http://127.0.0.1:9\"]\nallow_loopback = true\nsecrets = [\"k\"]\n[secrets.k]\nvalue = \"v\"\n[trading]\nnot_found_grace_s = 1\n",
            wasm.display().to_string()
        );
    let config = config.replace(
        "[routes.broker_settings]",
        "[routes.broker_settings]\nbusy_ms = 4000\nhas_order = false",
    );
    std::fs::write(&config_path, &config).unwrap();

    let (mut server, _) = start(&data);
    let addr = server.addr.clone();
    let path = format!("/v1/hooks/{token}");
    let client = std::thread::spawn(move || post(&addr, &path, "buy 1 AAPL at 100"));
    // Wait until the intent is recorded (the order row exists), then kill.
    let conn = rusqlite::Connection::open(data.join("state.db")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n: i64 = conn
            .query_row(
                "SELECT count(*) FROM orders WHERE state = 'intent' AND sent = 1",
                [],
                |r| r.get(0),
            )
            .unwrap_or(0);
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the intent was never recorded");
        std::thread::sleep(Duration::from_millis(20));
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let _ = client.join();

    // Restart: reconciliation asks the broker (it has no such order), the
    // alert resumes and finds its order already recorded. Sent a moment
    // before the crash, the order may not be listed yet: it stays unknown
    // for its grace (here 1 s), then is asked again and is never placed.
    let (mut server, _) = start(&data);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let state: String = conn
            .query_row("SELECT state FROM orders", [], |r| r.get(0))
            .unwrap_or_default();
        if state == "rejected" {
            break;
        }
        assert!(Instant::now() < deadline, "the order is still {state}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    assert!(server.child.wait().unwrap().success());
    let (state, reason): (String, String) = conn
        .query_row("SELECT state, reason FROM orders", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap();
    assert_eq!(state, "rejected");
    assert!(reason.contains("never placed"), "{reason}");
    let orders: i64 = conn
        .query_row("SELECT count(*) FROM orders WHERE sent = 1", [], |r| r.get(0))
        .unwrap();
    assert_eq!(orders, 1, "one order row, never a second");
    let d = data.to_str().unwrap();
    let (code, text) = audit_cli(&["search", "--data-dir", d, "--json", "--action", "plugin.call"]);
    assert_eq!(code, 0);
    let places = text
        .lines()
        .filter(|l| l.contains("\"export\":\"place-order\""))
        .count();
    assert_eq!(places, 0, "no placement was completed or repeated after the crash");
    assert!(
        text.contains("\"export\":\"get-order\""),
        "the broker was asked by client order id"
    );
    let (code, text) = audit_cli(&["search", "--data-dir", d, "--json", "--action", "order.duplicate"]);
    assert_eq!(code, 0);
    assert_eq!(text.lines().count(), 1, "the resumed alert found its order: {text}");
    let (code, text) = audit_cli(&["verify", "--data-dir", d]);
    assert_eq!(code, 0, "{text}");
}

fn cli(args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> (i32, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_algobanana"));
    cmd.args(args)
        .env_remove("ALGOBANANA_VAULT_PASSPHRASE")
        .env_remove("ALGOBANANA_VAULT_NEW_PASSPHRASE")
        .env_remove("ALGOBANANA_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The vault from the command line: `init` makes it, `secret set` reads the
/// value from stdin, `vault rekey` moves it to a passphrase, a wrong or
/// missing passphrase refuses start with a clear message, the running
/// server takes secrets through `--server`, and the canary is in no file
/// and no output.
#[test]
fn the_vault_from_the_command_line() {
    const CANARY: &str = "CANARY-cli-6d1f0a";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let mut outputs = String::new();
    let (code, out) = cli(&["init", "--data-dir", d, "--json"], &[], None);
    assert_eq!(code, 0, "{out}");
    let init: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    let admin = init["admin_token"].as_str().unwrap().to_owned();
    assert!(data.join("vault.abv").exists() && data.join("keys/vault.key").exists());
    assert!(
        !data.join("keys/audit-signing.key").exists(),
        "the audit key lives in the vault"
    );

    let (code, out) = cli(
        &["secret", "set", "alpaca-key", "--data-dir", d],
        &[],
        Some(&format!("{CANARY}\n")),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("secret `alpaca-key` created (version 1)"), "{out}");
    outputs += &out;
    let (code, out) = cli(&["secret", "list", "--data-dir", d], &[], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("alpaca-key") && out.contains("v1"), "{out}");
    assert!(
        !out.contains("algobanana.audit-signing-key"),
        "system records are not listed: {out}"
    );
    outputs += &out;
    let (code, out) = cli(&["secret", "set", "Bad Name", "--data-dir", d], &[], Some("x"));
    assert_eq!(code, 1);
    assert!(out.contains("lowercase"), "{out}");

    // A passphrase instead of the key file.
    let pass = [("ALGOBANANA_VAULT_NEW_PASSPHRASE", "correct horse battery staple")];
    let (code, out) = cli(
        &["vault", "rekey", "--data-dir", d, "--kdf-memory-mib", "19"],
        &pass,
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("opens with: passphrase"), "{out}");
    assert!(out.contains("no longer opens the vault; delete it"), "{out}");
    std::fs::remove_file(data.join("keys/vault.key")).unwrap();

    // Locked, then wrong: refused with what to do.
    let (code, out) = cli(&["serve", "--data-dir", d, "--listen", "127.0.0.1:0"], &[], None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("is locked: set ALGOBANANA_VAULT_PASSPHRASE"), "{out}");
    let wrong = [("ALGOBANANA_VAULT_PASSPHRASE", "wrong horse")];
    let (code, out) = cli(&["serve", "--data-dir", d, "--listen", "127.0.0.1:0"], &wrong, None);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("did not open with the passphrase"), "{out}");
    let (code, out) = cli(&["kill-switch", "status", "--data-dir", d], &wrong, None);
    assert_eq!(code, 0, "the kill switch never depends on the vault: {out}");

    // Right: it serves, and takes secrets over the admin API.
    let right = "correct horse battery staple";
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let (Server { mut child, addr }, _) = start_with(
        &data,
        &[("ALGOBANANA_VAULT_PASSPHRASE", right), ("RUST_LOG", "debug")],
        Stdio::from(log),
    );
    let server = format!("http://{addr}");
    let api = [
        ("ALGOBANANA_TOKEN", admin.as_str()),
        ("ALGOBANANA_SERVER", server.as_str()),
    ];
    let (code, out) = cli(&["secret", "set", "binance-key"], &api, Some(&format!("{CANARY}-2")));
    assert_eq!(code, 0, "{out}");
    outputs += &out;
    let (code, out) = cli(&["secret", "list"], &api, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("alpaca-key") && out.contains("binance-key"), "{out}");
    outputs += &out;
    // Against the data dir while the server holds the audit log: refused,
    // pointing at --server (no unaudited change).
    let (code, out) = cli(
        &["secret", "delete", "alpaca-key", "--data-dir", d],
        &[("ALGOBANANA_VAULT_PASSPHRASE", right)],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--server"), "{out}");
    let (code, out) = cli(&["api", "get", "/v1/whoami"], &api, None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("\"role\":\"admin\""), "{out}");
    // The audit export, streamed through `api` into a file that verifies
    // offline.
    let (code, export) = cli(&["api", "get", "/v1/audit/export?format=jsonl"], &api, None);
    assert_eq!(code, 0, "{export}");
    let file = dir.path().join("api-export.jsonl");
    std::fs::write(&file, &export).unwrap();
    let (code, out) = cli(&["audit", "verify", "--export", file.to_str().unwrap()], &[], None);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("INTACT"), "{out}");
    let (code, out) = cli(
        &["api", "get", "/v1/users"],
        &[
            ("ALGOBANANA_SERVER", server.as_str()),
            ("ALGOBANANA_TOKEN", "abk_nope_x"),
        ],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not valid"), "{out}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());

    // No canary in any file of the data dir, any output, or the server's log.
    assert!(!outputs.contains(CANARY), "{outputs}");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(!log.contains(CANARY) && !log.contains(right), "{log}");
    for p in files_under(&data) {
        let bytes = std::fs::read(&p).unwrap();
        assert!(
            !bytes.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
            "{} holds the canary",
            p.display()
        );
    }
    // The audit log verifies, with the key from the vault.
    let (code, out) = audit_cli(&["verify", "--data-dir", d]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(
        &["audit", "search", "--data-dir", d, "--action", "secret.*", "--json"],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("\"secret.set\"")).count(), 2, "{out}");

    // A tampered vault refuses start.
    let path = data.join("vault.abv");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    doc["records"][0]["name"] = serde_json::json!("renamed");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (code, out) = cli(
        &["serve", "--data-dir", d, "--listen", "127.0.0.1:0"],
        &[("ALGOBANANA_VAULT_PASSPHRASE", right)],
        None,
    );
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("has been altered or damaged"), "{out}");
}

/// A lost admin token is recovered with file access to the data dir (the
/// server stopped): `token create` prints a new one once, audited; with
/// the server running, tokens are listed and revoked through `--server`.
#[test]
fn tokens_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    assert_eq!(cli(&["init", "--data-dir", d], &[], None).0, 0);
    let (code, out) = cli(
        &[
            "token",
            "create",
            "--name",
            "recovery",
            "--role",
            "admin",
            "--data-dir",
            d,
        ],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}");
    let token = out.lines().next().unwrap().trim().to_owned();
    assert!(token.starts_with("abk_"), "{out}");
    let (code, out) = cli(
        &["token", "create", "--name", "x", "--role", "boss", "--data-dir", d],
        &[],
        None,
    );
    assert_eq!(code, 1);
    assert!(out.contains("expected admin, trader, viewer or auditor"), "{out}");
    let (code, out) = cli(&["token", "list", "--data-dir", d], &[], None);
    assert_eq!(code, 0);
    assert!(
        out.contains("recovery") && out.contains("initial admin") && !out.contains(&token),
        "{out}"
    );

    let (Server { mut child, addr }, _) = start(&data);
    let server = format!("http://{addr}");
    let api = [
        ("ALGOBANANA_TOKEN", token.as_str()),
        ("ALGOBANANA_SERVER", server.as_str()),
    ];
    let (code, out) = cli(&["token", "create", "--name", "dash", "--role", "viewer"], &api, None);
    assert_eq!(code, 0, "{out}");
    let viewer = out.trim().to_owned();
    let id = viewer
        .strip_prefix("abk_")
        .unwrap()
        .split('_')
        .next()
        .unwrap()
        .to_owned();
    let as_viewer = [
        ("ALGOBANANA_TOKEN", viewer.as_str()),
        ("ALGOBANANA_SERVER", server.as_str()),
    ];
    assert_eq!(cli(&["api", "get", "/v1/whoami"], &as_viewer, None).0, 0);
    let (code, out) = cli(&["token", "revoke", &id], &api, None);
    assert_eq!(code, 0, "{out}");
    let (code, out) = cli(&["api", "get", "/v1/whoami"], &as_viewer, None);
    assert_eq!(code, 1, "revoked at once: {out}");
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let (code, out) = cli(
        &["audit", "search", "--data-dir", d, "--action", "token.*", "--json"],
        &[],
        None,
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 4, "init's, recovery, dash, the revocation: {out}");
}
