//! Formats shared by the appliance and the host tools.
//!
//! Dependencies point one way: `formats` <- supervisor, worker, cli.

pub mod protocol;
