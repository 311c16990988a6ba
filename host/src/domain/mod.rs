//! The closed set of domain types on the order path: exact money, typed
//! identifiers and orders. No `f64` anywhere in here.
#![deny(clippy::float_arithmetic)]

pub mod ids;
pub mod money;
pub mod order;
