//! The one integration-test binary. Every test starts the real host on
//! `127.0.0.1:0` with plugins built from `plugins/` source.
//!
//! Table of contents:
//! - `admin`: the admin API: tokens, the role × endpoint table, the kill
//!   switch and the audit log over HTTP.
//! - `alerts`: webhook → rule → paper broker → response, field by field;
//!   404, 413, malformed alerts, request ids, persistence, concurrency.
//! - `plugins`: one test per plugin in `plugins/` (enforced by
//!   `foreach_plugin!`): first-party behaviour and hostile fixtures
//!   (deadline, memory, panic, filesystem, environment, network, output and
//!   log floods, kv atomicity and quotas, undeclared imports).
//! - `languages`: the JavaScript and Python rules built from source give
//!   the Rust rule's answers through the same host path; a Python
//!   component importing all of WASI gets nothing.
//! - `capabilities`: grants at link time and per call, outbound HTTP
//!   (allowlist, resolved-address check, quotas), secrets as handles (the
//!   secret thief), and their audit rows.
//! - `alpaca`: the Alpaca adapter against a local server speaking
//!   Alpaca's wire format.
//! - `audit`: the hash chain, append-only triggers, search, and a full
//!   disk halting the host without losing acknowledged alerts.
//! - `config_ui`: broken configs and plugins give errors that name the
//!   file, the key and what to do (snapshots in `tests/ui/`).
//! - `tamper`: the tamper sweep (every edit of the SQLite file found with
//!   its class and first bad seq), offline export verification, prune,
//!   key rotation and witness notes.
//! - `trading`: exactly-once orders, risk rails, the kill switch,
//!   reconciliation, crash recovery, 202 and stale signals.
//! - `recovery`: a power loss that rolls `state.db` back: lost alert and
//!   order rows restored from the audit log, nothing sent twice; an
//!   answer only after its alert's batched writes are committed.
//! - `notify`: notifier plugins against local servers speaking each
//!   service's wire format.
//! - `openapi`: schemathesis against `/v1/openapi.json`: no 5xx, no admin
//!   route without its token.
//! - `webhooks`: passphrase, signature, source allowlist, rate limit.
//! - `cli`: `init` and `audit search` through the command-line code.
//! - `vault`: vault secrets used without a trace at rest, hook-token
//!   rotation, paused routes, limits over the API, users and modes, HTTPS.
//! - `author`: `plugin new` projects in Rust, JavaScript and Python build
//!   and pass their sample tests; `plugin test` reports every limit;
//!   `plugin install` precompiles for the next start.

mod admin;
mod alerts;
mod alpaca;
mod audit;
mod author;
mod binance;
mod capabilities;
mod cli;
mod config_ui;
mod languages;
mod notify;
mod openapi;
mod plugins;
mod recovery;
mod tamper;
mod trading;
mod vault;
mod webhooks;
