//! `algobanana plugin new`: writes a working rule-plugin project in Rust,
//! JavaScript or Python. Each builds with its pinned toolchain, carries the
//! WIT contract (JS and Python) or depends on the SDK (Rust), embeds a
//! manifest, and comes with sample alerts and their expected outputs for
//! `algobanana plugin test --expect`. The templates live in
//! `src/author/templates/` and are compiled into the binary.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// A plugin language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the algobanana plugin SDK (`cargo build --target wasm32-wasip2`).
    Rust,
    /// JavaScript with componentize-js.
    Js,
    /// Python with componentize-py.
    Python,
}

/// What `plugin new` creates.
#[derive(Debug, Clone)]
pub struct NewPlugin {
    /// The language.
    pub lang: Lang,
    /// The plugin's name: 1–64 lowercase letters, digits or '-', starting
    /// with a letter.
    pub name: String,
    /// Where to create it (default: `./NAME`).
    pub dir: Option<PathBuf>,
    /// The SDK's directory for a Rust project (default: the checkout this
    /// binary was built from, when it is still there).
    pub sdk: Option<PathBuf>,
}

const WIT: &[(&str, &str)] = &[
    ("wit/types.wit", include_str!("../../../wit/types.wit")),
    ("wit/host.wit", include_str!("../../../wit/host.wit")),
    ("wit/worlds.wit", include_str!("../../../wit/worlds.wit")),
];

const COMMON: &[(&str, &str)] = &[
    ("alerts/buy.txt", include_str!("templates/common/buy.txt")),
    ("alerts/bad.txt", include_str!("templates/common/bad.txt")),
    ("alerts/expected.json", include_str!("templates/common/expected.json")),
];

const RUST: &[(&str, &str)] = &[
    ("Cargo.toml", include_str!("templates/rust/Cargo.toml.tmpl")),
    (
        "rust-toolchain.toml",
        include_str!("templates/rust/rust-toolchain.toml"),
    ),
    ("src/lib.rs", include_str!("templates/rust/src/lib.rs.tmpl")),
    ("README.md", include_str!("templates/rust/README.md.tmpl")),
    (".gitignore", include_str!("templates/rust/gitignore")),
];

const JS: &[(&str, &str)] = &[
    ("package.json", include_str!("templates/js/package.json.tmpl")),
    ("rule.js", include_str!("templates/js/rule.js.tmpl")),
    ("build.mjs", include_str!("templates/js/build.mjs.tmpl")),
    ("plugin.toml", include_str!("templates/common/plugin.toml.tmpl")),
    ("README.md", include_str!("templates/js/README.md.tmpl")),
    (".gitignore", include_str!("templates/js/gitignore")),
];

/// The toolchain lock the test suite builds with; the project gets the
/// same pins under its own name.
const JS_LOCK: &str = include_str!("../../../plugins/toolchain/js/package-lock.json");

const PYTHON: &[(&str, &str)] = &[
    ("app.py", include_str!("templates/python/app.py.tmpl")),
    ("build.py", include_str!("templates/python/build.py.tmpl")),
    (
        "requirements.txt",
        include_str!("../../../plugins/toolchain/python/requirements.txt"),
    ),
    ("plugin.toml", include_str!("templates/common/plugin.toml.tmpl")),
    ("README.md", include_str!("templates/python/README.md.tmpl")),
    (".gitignore", include_str!("templates/python/gitignore")),
];

/// Creates the project; returns its directory.
///
/// # Errors
/// An invalid name, a directory that exists and is not empty, a Rust
/// project without a findable SDK, or an I/O error.
pub fn create(new: &NewPlugin, out: &mut (dyn Write + Send)) -> anyhow::Result<PathBuf> {
    check_name(&new.name)?;
    let dir = new.dir.clone().unwrap_or_else(|| PathBuf::from(&new.name));
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!(
            "{} already exists and is not empty; choose another --dir or remove it",
            dir.display()
        );
    }
    let crate_name = new.name.replace('-', "_");
    let sdk = match new.lang {
        Lang::Rust => sdk_path(new.sdk.as_deref())?,
        Lang::Js | Lang::Python => String::new(),
    };
    let fill = |text: &str| {
        text.replace("{{name}}", &new.name)
            .replace("{{crate}}", &crate_name)
            .replace("{{sdk}}", &sdk)
    };
    let mut files: Vec<(&str, String)> = COMMON.iter().map(|(p, t)| (*p, (*t).to_owned())).collect();
    match new.lang {
        Lang::Rust => files.extend(RUST.iter().map(|(p, t)| (*p, fill(t)))),
        Lang::Js => {
            files.extend(WIT.iter().map(|(p, t)| (*p, (*t).to_owned())));
            files.extend(JS.iter().map(|(p, t)| (*p, fill(t))));
            files.push((
                "package-lock.json",
                JS_LOCK.replace("\"algobanana-js-toolchain\"", &format!("{:?}", new.name)),
            ));
        }
        Lang::Python => {
            files.extend(WIT.iter().map(|(p, t)| (*p, (*t).to_owned())));
            files.extend(PYTHON.iter().map(|(p, t)| (*p, fill(t))));
        }
    }
    for (rel, text) in &files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    writeln!(out, "created {} ({} files)", dir.display(), files.len())?;
    let next = match new.lang {
        Lang::Rust => format!(
            "cd {0} && cargo test && cargo build --release --target wasm32-wasip2\nalgobanana plugin test target/wasm32-wasip2/release/{1}.wasm --alert alerts/buy.txt --alert alerts/bad.txt --expect alerts/expected.json",
            dir.display(),
            crate_name
        ),
        Lang::Js => format!("cd {} && npm ci && npm test", dir.display()),
        Lang::Python => format!(
            "cd {0} && python3 -m venv .venv && .venv/bin/pip install --require-hashes -r requirements.txt && .venv/bin/python build.py\nalgobanana plugin test {1}.wasm --alert alerts/buy.txt --alert alerts/bad.txt --expect alerts/expected.json",
            dir.display(),
            new.name
        ),
    };
    writeln!(out, "next:\n{next}")?;
    Ok(dir)
}

fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = (1..=64).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "`{name}` is not a valid plugin name; use 1–64 lowercase letters, digits and '-', starting with a letter (e.g. my-rule)"
        );
    }
    Ok(())
}

/// The SDK directory as it goes into `Cargo.toml` (forward slashes).
fn sdk_path(given: Option<&Path>) -> anyhow::Result<String> {
    let candidate = match given {
        Some(p) => p.to_owned(),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugin-sdk"),
    };
    let abs = std::fs::canonicalize(&candidate)
        .ok()
        .filter(|p| p.join("Cargo.toml").is_file())
        .with_context(|| {
            format!(
                "cannot find the Rust plugin SDK at {}; pass --sdk PATH to the plugin-sdk directory of an algobanana checkout",
                candidate.display()
            )
        })?;
    Ok(abs.display().to_string().replace('\\', "/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-rule2").is_ok());
        for bad in ["", "My", "2fast", "a_b", "a-", "a b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_language_gets_alerts_and_a_manifest() {
        for lang in [Lang::Rust, Lang::Js, Lang::Python] {
            let dir = std::env::temp_dir().join(format!("algobanana-scaffold-{}", uuid::Uuid::now_v7().simple()));
            let new = NewPlugin {
                lang,
                name: "demo".into(),
                dir: Some(dir.clone()),
                sdk: None,
            };
            let mut out = Vec::new();
            create(&new, &mut out).unwrap();
            assert!(dir.join("alerts/expected.json").is_file());
            let has_manifest = match lang {
                Lang::Rust => std::fs::read_to_string(dir.join("src/lib.rs"))
                    .unwrap()
                    .contains("name = \"demo\""),
                Lang::Js | Lang::Python => std::fs::read_to_string(dir.join("plugin.toml"))
                    .unwrap()
                    .contains("name = \"demo\""),
            };
            assert!(has_manifest, "{lang:?}");
            let err = create(&new, &mut out).unwrap_err().to_string();
            assert!(err.contains("already exists"), "{err}");
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}
