//! flux's integration tests: one binary (`cargo test --test integration`), one module per
//! feature, each test named after the behaviour it checks; `test` is the harness they share.
//!
//! The feature modules live in `tests/integration/` rather than `tests/` because Cargo.toml
//! does not set `autotests = false`: cargo would otherwise build every `tests/*.rs` as a
//! test crate of its own, where `crate::test` does not exist.

mod faultproxy;
mod servers;
mod test;

#[path = "integration/cache.rs"]
mod cache;
#[path = "integration/cli.rs"]
mod cli;
#[path = "integration/completion.rs"]
mod completion;
#[path = "integration/concurrency.rs"]
mod concurrency;
#[path = "integration/copies.rs"]
mod copies;
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
#[path = "integration/explain.rs"]
mod explain;
#[path = "integration/fluxfile.rs"]
mod fluxfile;
#[path = "integration/fuzz.rs"]
mod fuzz;
#[path = "integration/hdfs.rs"]
mod hdfs;
#[path = "integration/keys.rs"]
mod keys;
#[path = "integration/limits.rs"]
mod limits;
#[path = "integration/mark.rs"]
mod mark;
#[path = "integration/orphans.rs"]
mod orphans;
#[path = "integration/output.rs"]
mod output;
#[path = "integration/param_kinds.rs"]
mod param_kinds;
#[path = "integration/params.rs"]
mod params;
#[path = "integration/planning.rs"]
mod planning;
#[path = "integration/property.rs"]
mod property;
#[path = "integration/racy.rs"]
mod racy;
#[path = "integration/remote_stat.rs"]
mod remote_stat;
#[path = "integration/schedule.rs"]
mod schedule;
#[path = "integration/schedule_dst.rs"]
mod schedule_dst;
#[path = "integration/selection.rs"]
mod selection;
#[path = "integration/slurm.rs"]
mod slurm;
#[path = "integration/staging.rs"]
mod staging;
#[path = "integration/staleness.rs"]
mod staleness;
#[path = "integration/state.rs"]
mod state;
#[path = "integration/status_grid.rs"]
mod status_grid;
#[path = "integration/store_pipeline.rs"]
mod store_pipeline;
#[path = "integration/stores.rs"]
mod stores;
#[path = "integration/template_checks.rs"]
mod template_checks;
#[path = "integration/templates.rs"]
mod templates;
#[path = "integration/ui.rs"]
mod ui;
#[path = "integration/ui_browser.rs"]
mod ui_browser;
#[path = "integration/vars.rs"]
mod vars;
#[path = "integration/whole_range.rs"]
mod whole_range;
