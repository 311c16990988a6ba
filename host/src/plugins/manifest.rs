//! The plugin manifest: name, version, world, WIT version, description and
//! the capabilities the plugin requests, embedded in the component as the
//! `algobanana-manifest` custom section (the SDK's `manifest!` macro
//! writes it; other languages can add it with `wasm-tools metadata` or any
//! custom-section tool). Being inside the component, it is covered by the
//! digest: what a plugin asks for cannot change without the digest changing.
//!
//! The manifest asks; the operator's grant decides. At load a grant pinned
//! to another digest is carried over to the new component only when the new
//! manifest requests nothing beyond the grant (and the component imports
//! nothing beyond it); otherwise the operator approves the new digest.

use serde::{Deserialize, Serialize};

use crate::config::{Grant, Origin};

/// The custom section's name.
pub const SECTION: &str = "algobanana-manifest";

/// Largest manifest accepted.
const MAX_BYTES: usize = 16 * 1024;

/// A parsed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// The plugin's name (marketplace identity).
    pub name: String,
    /// Its version.
    pub version: String,
    /// `rule` or `broker`.
    pub world: String,
    /// The `algobanana:plugin` version it targets.
    pub wit: String,
    /// What it does.
    #[serde(default)]
    pub description: String,
    /// When a rule gets the route account's portfolio (rule world only).
    #[serde(default)]
    pub portfolio: PortfolioMode,
    /// What it asks the operator to grant.
    #[serde(default)]
    pub requests: Requests,
}

/// When the host fetches the route account's portfolio for a rule.
///
/// Not a capability: a rule sees only the account its route sends orders
/// to, and did before this setting existed. The setting says what the rule
/// costs: each fetch is two audited broker calls and, with a live broker,
/// two API round trips before the rule can answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortfolioMode {
    /// Fetched before every `evaluate` and passed as its `portfolio`
    /// argument (the default, and what rules built before
    /// `broker-view` get).
    #[default]
    BeforeCall,
    /// Fetched only when the rule calls `broker-view.get-portfolio`;
    /// `evaluate`'s argument is none.
    OnRequest,
}

/// Requested capabilities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requests {
    /// The key-value store.
    #[serde(default)]
    pub kv: bool,
    /// Origins (`scheme://host[:port]`).
    #[serde(default)]
    pub http: Vec<String>,
    /// Secret names.
    #[serde(default)]
    pub secrets: Vec<String>,
}

impl Requests {
    /// What is requested beyond `grant`, one line each.
    pub fn beyond(&self, grant: &Grant) -> Vec<String> {
        let mut more = Vec::new();
        if self.kv && !grant.kv {
            more.push("kv".to_owned());
        }
        for h in &self.http {
            match Origin::parse(h) {
                Ok(o) if grant.http.iter().any(|g| g.matches(&o.scheme, &o.host, o.port)) => {}
                _ => more.push(format!("http {h}")),
            }
        }
        for s in &self.secrets {
            if !grant.secrets.contains(s) {
                more.push(format!("secret {s}"));
            }
        }
        more
    }
}

/// Reads the manifest from a component's bytes: `Ok(None)` when it has
/// none.
///
/// # Errors
/// A malformed manifest (what is wrong with it).
pub fn read(component: &[u8]) -> Result<Option<Manifest>, String> {
    for payload in wasmparser::Parser::new(0).parse_all(component) {
        let Ok(payload) = payload else { break };
        if let wasmparser::Payload::CustomSection(c) = payload
            && c.name() == SECTION
        {
            if c.data().len() > MAX_BYTES {
                return Err(format!("the manifest is over {MAX_BYTES} bytes"));
            }
            let text = std::str::from_utf8(c.data()).map_err(|_| "the manifest is not UTF-8".to_owned())?;
            return toml::from_str(text)
                .map(Some)
                .map_err(|e| format!("the manifest is not valid: {}", e.to_string().trim_end()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &str) -> Result<Manifest, toml::de::Error> {
        toml::from_str(&format!(
            "name = \"r\"\nversion = \"0.1.0\"\nworld = \"rule\"\nwit = \"0.1.0\"\n{extra}"
        ))
    }

    #[test]
    fn the_portfolio_is_fetched_before_the_call_unless_the_manifest_says_on_request() {
        assert_eq!(parse("").unwrap().portfolio, PortfolioMode::BeforeCall);
        assert_eq!(
            parse("portfolio = \"before-call\"").unwrap().portfolio,
            PortfolioMode::BeforeCall
        );
        assert_eq!(
            parse("portfolio = \"on-request\"").unwrap().portfolio,
            PortfolioMode::OnRequest
        );
        let err = parse("portfolio = \"lazy\"").unwrap_err().to_string();
        assert!(err.contains("`before-call`") && err.contains("`on-request`"), "{err}");
    }
}
