//! The lifecycle of an installation beyond "make it exist": upgrade tests,
//! test data, expiry, capacity and the sweep of orphaned namespaces. The
//! decisions are pure functions; `reconcile` and `sweep` carry them out.

pub mod capacity;
pub mod expiry;
pub mod seed;
pub mod sweep;
pub mod ttl;
pub mod upgrade;
