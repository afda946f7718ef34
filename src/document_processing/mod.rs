//! The document-processing workflow of Agent Framework issue #5745, and
//! the program that runs it (`examples/document_processing.rs`).
//!
//! Six executors in a chain, each returning a typed output of a few
//! kilobytes (records with several fields and a moderately sized text):
//!
//! ```text
//! entry-unpack -> validate-inputs -> load-configuration -> extract-layout -> analyse-document -> validate-outputs
//! ```
//!
//! On the Durable Task host this kills the orchestration at superstep 7,
//! because the accumulated executor events are re-serialized into the
//! 16 KB custom status. Here they go to the instance's stream, and the
//! live status holds only `{superstep, pending_requests}`.
//!
//! A [`DocumentJob`] says how big the run is: `executors` invocations in
//! all (one per superstep; more than six repeat the analysis stages,
//! `extract-layout` and `analyse-document`, before `validate-outputs`),
//! and `output_kb` kilobytes of JSON per executor output. Outputs are
//! deterministic: the same job gives the same outputs, byte for byte.
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! use agent_workflows::prelude::*;
//! use durable_workspace::document_processing::{DocumentJob, DocumentProcessing, DocumentResult};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store: Arc<dyn Store> = Arc::new(SqliteStore::in_memory().await?);
//! let worker = Worker::start(store.clone(), durable_workspace::register(Registry::new()))?;
//! let client = WorkflowClient::new(Client::new(store));
//!
//! let id = client.start(DocumentProcessing, &DocumentJob::new("invoice-7")).await?;
//! let result = client.wait_for_completion(&id, Duration::from_secs(30)).await?;
//! let [output] = &result.outputs_as::<DocumentResult>()?[..] else { panic!("one output") };
//! assert_eq!(output.document_id, "invoice-7");
//! assert_eq!(output.executors_run, 6);
//! assert!(output.valid);
//! worker.shutdown().await?;
//! # Ok(())
//! # }
//! ```

mod data;
mod program;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use agent_workflows::prelude::*;
use serde::{Deserialize, Serialize};

pub use data::{
    Analysis, Block, Check, Configuration, ExtractedField, Layout, PageRef, Progress, Threshold,
    UnpackedDocument, ValidatedInputs, ValidationReport,
};
pub use program::{
    run, RunError, RunOptions, RunOutcome, RunSummary, Summary, DEFAULT_DB, MAX_RUNS, MAX_WORK_MS, USAGE,
};

/// The name runs of the workflow are started by.
pub const NAME: &str = "document-processing";

/// The executor ids, in pipeline order.
pub const EXECUTOR_IDS: [&str; 6] = [
    "entry-unpack",
    "validate-inputs",
    "load-configuration",
    "extract-layout",
    "analyse-document",
    "validate-outputs",
];

/// The fewest executor invocations a run can have: one per stage.
pub const MIN_EXECUTORS: u32 = 6;
/// The most executor invocations a run may have (also the workflow's
/// superstep limit).
pub const MAX_EXECUTORS: u32 = 1000;
/// The largest output size, in KiB (the stream's per-event cap is 64 KiB).
pub const MAX_OUTPUT_KB: u32 = 32;

/// The input of a run: which document, how many executor invocations,
/// how large each output is, and how long each executor pretends to work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentJob {
    /// A name for the document; it seeds the generated content.
    pub document_id: String,
    /// Executor invocations in all, one per superstep (6 to 1,000; more
    /// than 6 repeat `extract-layout` and `analyse-document`).
    #[serde(default = "default_executors")]
    pub executors: u32,
    /// The size of each executor's output, in KiB of JSON (1 to 32).
    #[serde(default = "default_output_kb")]
    pub output_kb: u32,
    /// Milliseconds each executor sleeps, standing in for real work.
    #[serde(default)]
    pub work_ms: u32,
}

fn default_executors() -> u32 {
    MIN_EXECUTORS
}

fn default_output_kb() -> u32 {
    2
}

impl DocumentJob {
    /// Six executors with 2 KiB outputs and no simulated work.
    pub fn new(document_id: impl Into<String>) -> Self {
        Self {
            document_id: document_id.into(),
            executors: default_executors(),
            output_kb: default_output_kb(),
            work_ms: 0,
        }
    }

    /// Sets the number of executor invocations.
    pub fn executors(mut self, n: u32) -> Self {
        self.executors = n;
        self
    }

    /// Sets the output size in KiB.
    pub fn output_kb(mut self, kb: u32) -> Self {
        self.output_kb = kb;
        self
    }

    /// Sets the simulated work per executor, in milliseconds.
    pub fn work_ms(mut self, ms: u32) -> Self {
        self.work_ms = ms;
        self
    }

    /// Checks the job's numbers.
    ///
    /// # Errors
    ///
    /// A message saying which value is out of range.
    pub fn validate(&self) -> Result<(), String> {
        if self.document_id.trim().is_empty() {
            return Err("the document id is empty".into());
        }
        if !(MIN_EXECUTORS..=MAX_EXECUTORS).contains(&self.executors) {
            return Err(format!(
                "executors must be from {MIN_EXECUTORS} to {MAX_EXECUTORS}, not {}",
                self.executors
            ));
        }
        if !(1..=MAX_OUTPUT_KB).contains(&self.output_kb) {
            return Err(format!(
                "output_kb must be from 1 to {MAX_OUTPUT_KB}, not {}",
                self.output_kb
            ));
        }
        Ok(())
    }

    /// The executor that runs at each step (superstep) of a run of this
    /// job, in order.
    ///
    /// ```
    /// use durable_workspace::document_processing::DocumentJob;
    ///
    /// assert_eq!(
    ///     DocumentJob::new("d").executors(9).schedule(),
    ///     [
    ///         "entry-unpack", "validate-inputs", "load-configuration",
    ///         "extract-layout", "analyse-document",
    ///         "extract-layout", "analyse-document", "analyse-document",
    ///         "validate-outputs",
    ///     ]
    /// );
    /// ```
    pub fn schedule(&self) -> Vec<&'static str> {
        let mut steps = EXECUTOR_IDS[..5].to_vec();
        let mut progress = Progress::first(self);
        progress.step = 5;
        loop {
            match next_after_analysis(&progress) {
                AfterAnalysis::ExtractAgain => steps.extend(["extract-layout", "analyse-document"]),
                AfterAnalysis::AnalyseAgain => steps.push("analyse-document"),
                AfterAnalysis::Validate => break,
            }
            progress.step = steps.len() as u32;
        }
        steps.push("validate-outputs");
        steps
    }
}

/// The workflow output of a run: what `validate-outputs` yields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DocumentResult {
    /// The document.
    pub document_id: String,
    /// The document class the analysis settled on.
    pub classification: String,
    /// Whether every output check passed.
    pub valid: bool,
    /// The fields extracted by the last analysis round.
    pub fields: Vec<ExtractedField>,
    /// Executor invocations in the run.
    pub executors_run: u32,
    /// Rounds of `analyse-document`.
    pub analysis_rounds: u32,
}

/// One executor invocation (one attempt), as reported to
/// [`Hooks::on_invocation`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Invocation {
    /// The run's instance id.
    pub instance_id: String,
    /// The executor.
    pub executor_id: String,
    /// The document.
    pub document_id: String,
    /// The step (superstep) of the run, 1 for `entry-unpack`.
    pub step: u32,
    /// The attempt (1 for the first).
    pub attempt: u32,
}

type InvocationHook = Arc<dyn Fn(&Invocation) + Send + Sync>;

/// Callbacks of the pipeline's executors, for tests and instrumentation.
///
/// Activities are at-least-once: a worker that dies while an executor
/// runs leaves it to be run again by another worker. The hook sees every
/// such run, which is how the crash tests count them.
#[derive(Clone, Default)]
pub struct Hooks {
    on_invocation: Option<InvocationHook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("on_invocation", &self.on_invocation.is_some())
            .finish()
    }
}

impl Hooks {
    /// No callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `f` each time an executor starts work (before its simulated
    /// work), in the worker's process.
    pub fn on_invocation(mut self, f: impl Fn(&Invocation) + Send + Sync + 'static) -> Self {
        self.on_invocation = Some(Arc::new(f));
        self
    }
}

/// The document-processing workflow, to start runs by type:
/// `client.start(DocumentProcessing, &job)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct DocumentProcessing;

impl WorkflowDefinition for DocumentProcessing {
    type Input = DocumentJob;
    const NAME: &'static str = NAME;

    fn build() -> Workflow<DocumentJob> {
        workflow(Hooks::default())
    }
}

/// Registers the workflow (orchestration and executor activities) with
/// these hooks. [`crate::register`] registers it without hooks.
pub fn register_with_hooks(registry: Registry, hooks: Hooks) -> Registry {
    workflow(hooks).register(NAME, registry)
}

/// Builds the workflow graph: the six stages in a chain, with conditional
/// edges after `analyse-document` that repeat the analysis stages until
/// the job's executor count is reached.
pub fn workflow(hooks: Hooks) -> Workflow<DocumentJob> {
    let analyse = || AnalyseDocument { hooks: hooks.clone() };
    WorkflowBuilder::start(EntryUnpack { hooks: hooks.clone() })
        .then(ValidateInputs { hooks: hooks.clone() })
        .then(LoadConfiguration { hooks: hooks.clone() })
        .then(ExtractLayout { hooks: hooks.clone() })
        .then(analyse())
        .add_edge_if(
            analyse(),
            ExtractLayout { hooks: hooks.clone() },
            |a: &Analysis| next_after_analysis(&a.progress) == AfterAnalysis::ExtractAgain,
        )
        .add_edge_if(analyse(), analyse(), |a: &Analysis| {
            next_after_analysis(&a.progress) == AfterAnalysis::AnalyseAgain
        })
        .add_edge_if(
            analyse(),
            ValidateOutputs { hooks: hooks.clone() },
            |a: &Analysis| next_after_analysis(&a.progress) == AfterAnalysis::Validate,
        )
        .max_supersteps(MAX_EXECUTORS)
        .build()
}

#[derive(Debug, PartialEq, Eq)]
enum AfterAnalysis {
    /// Two or more invocations are left before `validate-outputs`.
    ExtractAgain,
    /// One is left.
    AnalyseAgain,
    /// None.
    Validate,
}

/// Where the run goes after `analyse-document` produced its output at
/// `progress.step`.
fn next_after_analysis(progress: &Progress) -> AfterAnalysis {
    // Invocations left, not counting validate-outputs.
    match progress.executors.saturating_sub(progress.step + 1) {
        0 => AfterAnalysis::Validate,
        1 => AfterAnalysis::AnalyseAgain,
        _ => AfterAnalysis::ExtractAgain,
    }
}

/// What the first round of `analyse-document` returns for `job`: the
/// document's class and extracted fields (used by the approval workflow).
pub fn first_analysis(job: &DocumentJob) -> Analysis {
    let mut progress = Progress::first(job);
    progress.step = 5;
    data::analyse(progress, 1, None)
}

/// What every stage does first: report the invocation, then "work".
async fn begin(hooks: &Hooks, ctx: &WorkflowContext, progress: &Progress) {
    if let Some(hook) = &hooks.on_invocation {
        hook(&Invocation {
            instance_id: ctx.instance_id().to_owned(),
            executor_id: ctx.executor_id().to_owned(),
            document_id: progress.document_id.clone(),
            step: progress.step,
            attempt: ctx.attempt(),
        });
    }
    if progress.work_ms > 0 {
        tokio::time::sleep(Duration::from_millis(progress.work_ms.into())).await;
    }
}

struct EntryUnpack {
    hooks: Hooks,
}

#[executor(id = "entry-unpack")]
impl EntryUnpack {
    /// Unpacks the submitted document.
    #[handler]
    async fn on_job(
        &self,
        job: DocumentJob,
        ctx: &mut WorkflowContext,
    ) -> Result<UnpackedDocument, ExecutorError> {
        job.validate().map_err(ExecutorError::terminal)?;
        let progress = Progress::first(&job);
        begin(&self.hooks, ctx, &progress).await;
        Ok(data::unpack(progress))
    }
}

struct ValidateInputs {
    hooks: Hooks,
}

#[executor(id = "validate-inputs")]
impl ValidateInputs {
    /// Checks the unpacked document.
    #[handler]
    async fn on_unpacked(
        &self,
        document: UnpackedDocument,
        ctx: &mut WorkflowContext,
    ) -> Result<ValidatedInputs, ExecutorError> {
        let progress = document.progress.next();
        begin(&self.hooks, ctx, &progress).await;
        Ok(data::validate_inputs(progress, &document))
    }
}

struct LoadConfiguration {
    hooks: Hooks,
}

#[executor(id = "load-configuration")]
impl LoadConfiguration {
    /// Loads the extraction profile for the document.
    #[handler]
    async fn on_validated(
        &self,
        inputs: ValidatedInputs,
        ctx: &mut WorkflowContext,
    ) -> Result<Configuration, ExecutorError> {
        let progress = inputs.progress.next();
        begin(&self.hooks, ctx, &progress).await;
        Ok(data::load_configuration(progress, &inputs))
    }
}

struct ExtractLayout {
    hooks: Hooks,
}

#[executor(id = "extract-layout")]
impl ExtractLayout {
    /// The first layout pass.
    #[handler]
    async fn on_configuration(
        &self,
        configuration: Configuration,
        ctx: &mut WorkflowContext,
    ) -> Result<Layout, ExecutorError> {
        let progress = configuration.progress.next();
        begin(&self.hooks, ctx, &progress).await;
        Ok(data::extract_layout(progress, 1))
    }

    /// Another pass, guided by an analysis.
    #[handler]
    async fn on_analysis(
        &self,
        analysis: Analysis,
        ctx: &mut WorkflowContext,
    ) -> Result<Layout, ExecutorError> {
        let progress = analysis.progress.next();
        begin(&self.hooks, ctx, &progress).await;
        Ok(data::extract_layout(progress, analysis.round + 1))
    }
}

struct AnalyseDocument {
    hooks: Hooks,
}

#[executor(id = "analyse-document")]
impl AnalyseDocument {
    /// Analyses a layout.
    #[handler]
    async fn on_layout(&self, layout: Layout, ctx: &mut WorkflowContext) -> Result<Analysis, ExecutorError> {
        let progress = layout.progress.next();
        begin(&self.hooks, ctx, &progress).await;
        Ok(data::analyse(progress, layout.round, None))
    }

    /// Refines its own previous analysis.
    #[handler]
    async fn on_analysis(
        &self,
        previous: Analysis,
        ctx: &mut WorkflowContext,
    ) -> Result<Analysis, ExecutorError> {
        let progress = previous.progress.next();
        begin(&self.hooks, ctx, &progress).await;
        Ok(data::analyse(progress, previous.round + 1, Some(&previous)))
    }
}

struct ValidateOutputs {
    hooks: Hooks,
}

#[executor(id = "validate-outputs")]
impl ValidateOutputs {
    /// Checks the analysis and yields the run's result.
    #[handler]
    async fn on_analysis(
        &self,
        analysis: Analysis,
        ctx: &mut WorkflowContext,
    ) -> Result<ValidationReport, ExecutorError> {
        let progress = analysis.progress.next();
        begin(&self.hooks, ctx, &progress).await;
        let report = data::validate_outputs(progress, &analysis);
        ctx.yield_output(&DocumentResult {
            document_id: analysis.progress.document_id.clone(),
            classification: analysis.classification.clone(),
            valid: report.valid,
            fields: analysis.fields.clone(),
            executors_run: report.progress.step,
            analysis_rounds: analysis.round,
        })?;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use agent_workflows::ExecutorExt;

    use super::*;

    #[test]
    fn the_schedule_has_one_executor_per_step() {
        for n in MIN_EXECUTORS..40 {
            let schedule = DocumentJob::new("d").executors(n).schedule();
            assert_eq!(schedule.len(), n as usize, "{schedule:?}");
            assert_eq!(schedule[..5], EXECUTOR_IDS[..5]);
            assert_eq!(schedule.last(), Some(&"validate-outputs"));
            assert_eq!(schedule[schedule.len() - 2], "analyse-document");
        }
        assert_eq!(DocumentJob::new("d").schedule(), EXECUTOR_IDS);
    }

    #[test]
    fn jobs_out_of_range_are_refused() {
        assert!(DocumentJob::new("d").validate().is_ok());
        assert_eq!(
            DocumentJob::new("d").executors(5).validate().unwrap_err(),
            "executors must be from 6 to 1000, not 5"
        );
        assert_eq!(
            DocumentJob::new("d").output_kb(0).validate().unwrap_err(),
            "output_kb must be from 1 to 32, not 0"
        );
        assert_eq!(
            DocumentJob::new(" ").validate().unwrap_err(),
            "the document id is empty"
        );
    }

    #[tokio::test]
    async fn the_entry_refuses_a_bad_job_for_good() {
        let mut ctx = WorkflowContext::for_test("entry-unpack");
        let error = EntryUnpack { hooks: Hooks::new() }
            .handle(DocumentJob::new("d").executors(2), &mut ctx)
            .await
            .unwrap_err();
        assert!(error.is_terminal());
    }

    #[test]
    fn the_graph_has_the_six_stages() {
        assert_eq!(workflow(Hooks::new()).executor_ids(), EXECUTOR_IDS);
    }
}
