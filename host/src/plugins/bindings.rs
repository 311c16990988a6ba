//! Host-side bindings generated from `wit/` for both worlds. The broker
//! world reuses the rule world's data types and host interfaces, so one
//! `Linker<PluginState>` serves both.

/// `instantiate_prechecked` for a world's `…Pre`: instantiate, then look
/// the exports up by the indices `…Pre::new` resolved, without checking
/// their types again.
///
/// bindgen's own `instantiate_async` calls `…Indices::load`, which runs
/// `get_typed_func` for *every* export of the world on every instance: a
/// walk over each signature's records, variants and field names (the
/// broker world has six exports, the call uses one). `…Pre::new` already
/// ran the same check once, against the type of the component this
/// `InstancePre` instantiates, and every instance of one `InstancePre` has
/// that type, so repeating it per alert proves nothing new. The helper is
/// defined inside each bindings module because the generated fields are
/// private to it; it builds the same struct the generated code would.
macro_rules! prechecked {
    ($world:ident, $pre:ident { $($func:ident),+ $(,)? }) => {
        impl<T: Send + 'static> $pre<T> {
            /// Same as `instantiate_async`, without repeating the export
            /// type checks that `new` already made for this component.
            ///
            /// # Errors
            /// Instantiation failed (limits, a trapping start function).
            pub async fn instantiate_prechecked(
                &self,
                mut store: impl wasmtime::AsContextMut<Data = T>,
            ) -> wasmtime::Result<$world> {
                let mut store = store.as_context_mut();
                let instance = self.instance_pre.instantiate_async(&mut store).await?;
                Ok($world {
                    $($func: instance
                        .get_func(&mut store, &self.indices.$func)
                        .ok_or_else(|| wasmtime::format_err!(
                            concat!("export `", stringify!($func), "` vanished from its own component")
                        ))?,)+
                })
            }
        }
    };
}

/// The `rule` world: `evaluate`, plus the shared types and host interfaces.
#[allow(missing_docs, missing_debug_implementations, clippy::all)]
pub mod rule {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "algobanana:plugin/rule",
        // The portfolio may wait for two broker calls.
        imports: {
            "algobanana:plugin/broker-view.get-portfolio": async | trappable,
            default: trappable,
        },
        exports: { default: async },
        trappable_error_type: {
            "algobanana:plugin/types.capability-error" => crate::capabilities::CapabilityError,
        },
        additional_derives: [PartialEq],
    });

    prechecked!(Rule, RulePre { evaluate });
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

    prechecked!(
        Broker,
        BrokerPre {
            place_order,
            cancel_order,
            get_order,
            open_orders,
            positions,
            account
        }
    );
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

    prechecked!(Notifier, NotifierPre { notify });
}

pub use broker::algobanana::plugin::{http, secrets};
pub use rule::algobanana::plugin::{broker_view, clock, kv, log, types};
