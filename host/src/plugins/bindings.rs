//! Host-side bindings generated from `wit/` for both worlds. The broker
//! world reuses the rule world's data types and host interfaces, so one
//! `Linker<PluginState>` serves both.

/// The `rule` world: `evaluate`, plus the shared types and host interfaces.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod rule {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "algobanana:plugin/rule",
        imports: { default: trappable },
        exports: { default: async },
        trappable_error_type: {
            "algobanana:plugin/types.capability-error" => crate::capabilities::CapabilityError,
        },
        additional_derives: [PartialEq],
    });
}

/// The `broker` world: order placement and account queries.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod broker {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "algobanana:plugin/broker",
        // These two wait for the audit commit (and the network) before
        // they act.
        imports: {
            "algobanana:plugin/http.send": async | trappable,
            "algobanana:plugin/secrets.sign": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        with: {
            "algobanana:plugin/types": super::rule::algobanana::plugin::types,
            "algobanana:plugin/log": super::rule::algobanana::plugin::log,
            "algobanana:plugin/clock": super::rule::algobanana::plugin::clock,
            "algobanana:plugin/kv": super::rule::algobanana::plugin::kv,
        },
    });
}

/// The `notifier` world: `notify`.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod notifier {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "algobanana:plugin/notifier",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "algobanana:plugin/types": super::rule::algobanana::plugin::types,
            "algobanana:plugin/log": super::rule::algobanana::plugin::log,
            "algobanana:plugin/clock": super::rule::algobanana::plugin::clock,
            "algobanana:plugin/kv": super::rule::algobanana::plugin::kv,
            "algobanana:plugin/secrets": super::broker::algobanana::plugin::secrets,
            "algobanana:plugin/http": super::broker::algobanana::plugin::http,
        },
    });
}

pub use broker::algobanana::plugin::{http, secrets};
pub use rule::algobanana::plugin::{clock, kv, log, types};
