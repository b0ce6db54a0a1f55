//! What pbxgate and its simulators both speak, defined once: time as an input ([`clock`]),
//! random secrets and request ids ([`ids`]), and the small pieces of the outside parties'
//! wire formats that both sides read or write ([`cookie`], [`html`], [`graph`], [`pbx`]).
//!
//! Layer: the bottom. It depends on no other pbxgate crate; the product crate re-exports
//! `clock` and `ids` so that its modules say `crate::clock`.

pub mod clock;
pub mod cookie;
pub mod graph;
pub mod html;
pub mod ids;
pub mod pbx;
