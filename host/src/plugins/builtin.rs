//! First-party plugins embedded in the binary, so `algobanana serve` works
//! from a clean clone. `build.rs` builds them from `plugins/` source.

/// An embedded plugin.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    /// Its name (`builtin:NAME` in config).
    pub name: &'static str,
    /// Its version.
    pub version: &'static str,
    /// The world it implements.
    pub world: crate::config::World,
    /// The component bytes.
    pub wasm: &'static [u8],
}

/// Every embedded plugin.
pub const ALL: &[Builtin] = &[
    Builtin {
        name: "tradingview",
        version: "0.1.0",
        world: crate::config::World::Rule,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/tradingview.wasm")),
    },
    Builtin {
        name: "paper",
        version: "0.1.0",
        world: crate::config::World::Broker,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/paper.wasm")),
    },
    Builtin {
        name: "alpaca",
        version: "0.1.0",
        world: crate::config::World::Broker,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/alpaca.wasm")),
    },
    Builtin {
        name: "binance",
        version: "0.1.0",
        world: crate::config::World::Broker,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/binance.wasm")),
    },
    Builtin {
        name: "notify-webhook",
        version: "0.1.0",
        world: crate::config::World::Notifier,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/notify_webhook.wasm")),
    },
    Builtin {
        name: "notify-discord",
        version: "0.1.0",
        world: crate::config::World::Notifier,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/notify_discord.wasm")),
    },
    Builtin {
        name: "notify-slack",
        version: "0.1.0",
        world: crate::config::World::Notifier,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/notify_slack.wasm")),
    },
    Builtin {
        name: "notify-telegram",
        version: "0.1.0",
        world: crate::config::World::Notifier,
        wasm: include_bytes!(concat!(env!("OUT_DIR"), "/plugins/notify_telegram.wasm")),
    },
];

/// The embedded plugin called `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    ALL.iter().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first-party plugins are `no_std` (`no_std_runtime!` in the SDK):
    /// their components import only the `algobanana:plugin` interfaces, no
    /// WASI at all. A `std` import creeping back (a dependency with its
    /// `std` feature on, a `println!`) fails here, naming it.
    #[test]
    fn built_in_plugins_import_nothing_but_the_algobanana_interfaces() {
        let engine = wasmtime::Engine::default();
        for b in ALL {
            let component = wasmtime::component::Component::new(&engine, b.wasm).expect(b.name);
            let foreign: Vec<String> = component
                .component_type()
                .imports(&engine)
                .map(|(name, _)| name.to_owned())
                .filter(|name| !name.starts_with("algobanana:plugin/"))
                .collect();
            assert!(
                foreign.is_empty(),
                "built-in `{}` imports {foreign:?}; first-party plugins are no_std and import no WASI",
                b.name
            );
        }
    }
}
