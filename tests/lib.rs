//! flux's integration tests: one binary (`cargo test --test integration`), one module per
//! feature, each test named after the behaviour it checks; `test` is the harness they share.
//!
//! The feature modules live in `tests/integration/` rather than `tests/` because Cargo.toml
//! does not set `autotests = false`: cargo would otherwise build every `tests/*.rs` as a
//! test crate of its own, where `crate::test` does not exist.

mod servers;
mod test;

#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/concurrency.rs"]
mod concurrency;
#[path = "integration/crash.rs"]
mod crash;
#[path = "integration/dbfaults.rs"]
mod dbfaults;
#[path = "integration/deletes.rs"]
mod deletes;
#[path = "integration/errors.rs"]
mod errors;
#[path = "integration/operations.rs"]
mod operations;
// Written by another hand: runs the example pipelines in fluxfiles/ (self-contained).
mod examples;
#[path = "integration/execution.rs"]
mod execution;
#[path = "integration/fluxfile.rs"]
mod fluxfile;
#[path = "integration/hdfs.rs"]
mod hdfs;
#[path = "integration/keys.rs"]
mod keys;
#[path = "integration/output.rs"]
mod output;
#[path = "integration/params.rs"]
mod params;
#[path = "integration/planning.rs"]
mod planning;
#[path = "integration/property.rs"]
mod property;
#[path = "integration/schedule.rs"]
mod schedule;
#[path = "integration/staleness.rs"]
mod staleness;
#[path = "integration/state.rs"]
mod state;
#[path = "integration/stores.rs"]
mod stores;
#[path = "integration/templates.rs"]
mod templates;
