//! The example workflows and the programs built on them, shared by the
//! examples (`examples/`), the benchmark program, the HTTP server example
//! and the cross-crate tests (`tests/`).
//!
//! * [`document_processing`]: the pipeline of Agent Framework issue #5745
//!   (six executors with kilobytes of typed output each) and the program
//!   that runs it and prints its stream live.
//! * [`approval`]: a workflow that asks a person to approve an extracted
//!   result, and the program that asks.
//! * [`watch`]: follows any instance's stream live.
//! * [`cli`] and [`render`]: flag parsing and event printing for the
//!   examples.
//! * [`samples`]: plain durable-core orchestrations (the custom-status
//!   sample of the Durable Functions docs, and an approval by event).
//! * [`simulation`]: the seeded simulation of the whole runtime under
//!   faults, run by `tests/simulation.rs` and the benchmark program's
//!   `simulate` scenario.
//!
//! [`register`] puts every example workflow on a [`Registry`], so that a
//! worker anywhere can run them.

pub mod approval;
pub mod cli;
pub mod document_processing;
pub mod render;
pub mod samples;
pub mod simulation;
pub mod watch;

use std::sync::Arc;

use agent_workflows::RegistryExt;
use durable_core::store::Store;
use durable_core::{Registry, StoreError};

/// Registers every example workflow: document processing and human
/// approval (their orchestrations and executor activities).
///
/// ```
/// use durable_core::Registry;
///
/// let registry = durable_workspace::register(Registry::new());
/// assert!(registry.has_orchestration("document-processing"));
/// assert!(registry.has_activity("document-processing/analyse-document"));
/// assert!(registry.has_orchestration("human-approval"));
/// ```
pub fn register(registry: Registry) -> Registry {
    registry
        .workflow(document_processing::DocumentProcessing)
        .workflow(approval::human_approval)
}

/// Opens the store a `--db` URL names: `postgres://...` for PostgreSQL;
/// `sqlite://PATH`, `sqlite:PATH`, a plain path, or `sqlite::memory:` for
/// SQLite.
///
/// # Errors
///
/// [`StoreError::Config`] for a URL of another scheme, or the error of
/// opening the database.
pub async fn open_store(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    if let Some((scheme, _)) = url.split_once("://") {
        if !matches!(scheme, "sqlite" | "postgres" | "postgresql") {
            return Err(StoreError::Config(format!(
                "{scheme}:// URLs are not supported; use sqlite://PATH or postgres://USER@HOST/DB"
            )));
        }
    }
    durable_core::store::connect(url).await
}

/// The code of README.md, compiled as doctests so that the README shows the
/// real API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
