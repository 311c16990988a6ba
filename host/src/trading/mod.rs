//! Trading semantics on the host side: orders and their states
//! ([`orders`]), the risk rails ([`risk`]) and the kill switch.

pub mod orders;
pub mod risk;

pub mod kill;
pub mod locks;
pub mod notify;
pub mod reconcile;

/// The `control` key of the kill switch.
pub const KILL_SWITCH: &str = "kill_switch";
