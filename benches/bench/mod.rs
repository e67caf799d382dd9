//! Parts of `make bench` (see installations.rs).

pub mod apiserver;
pub mod direct;
pub mod memory;
pub mod plane;
pub mod process;
pub mod report;
