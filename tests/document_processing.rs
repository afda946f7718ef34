//! The main job's code path (`examples/document_processing.rs` calls
//! `document_processing::run` with the parsed flags): runs on a SQLite
//! file, the human and JSON outputs, the summary, bad flags, and runs left
//! to workers elsewhere.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use agent_workflows::{WorkflowClient, WorkflowEvent};
use common::{temp_db, text, within};
use durable_core::{Client, Registry, RuntimeStatus, Worker};
use durable_workspace::cli::{Args, Command};
use durable_workspace::document_processing::{
    self, register_with_hooks, DocumentJob, Hooks, RunError, RunOptions, RunSummary, EXECUTOR_IDS,
};
use serde_json::Value;

fn options(db: &str, flags: &[&str]) -> RunOptions {
    let mut args = vec!["--db", db];
    args.extend_from_slice(flags);
    match RunOptions::parse(Args::new(args)).expect("valid flags") {
        Command::Run(options) => options,
        Command::Help => panic!("not a help request"),
    }
}

async fn run(options: &RunOptions) -> (RunSummary, String) {
    let mut out = Vec::new();
    let summary = within("the run", document_processing::run(options, &mut out))
        .await
        .expect("the program runs");
    (summary, text(&out))
}

/// Every event of a run, read back from the store.
async fn stored_events(db: &str, id: &durable_core::InstanceId) -> Vec<WorkflowEvent> {
    let store = durable_workspace::open_store(db).await.unwrap();
    let client = WorkflowClient::new(Client::new(store));
    let events = client.events(id, 0, 10_000).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>(), "no gaps");
    events.into_iter().map(|e| e.event).collect()
}

/// `(executor, superstep, output bytes)` of each executor_completed event.
fn completions(events: &[WorkflowEvent]) -> Vec<(String, u32, usize)> {
    events
        .iter()
        .filter_map(|e| match e {
            WorkflowEvent::ExecutorCompleted {
                executor_id,
                superstep,
                output,
                ..
            } => Some((
                executor_id.clone(),
                *superstep,
                serde_json::to_vec(output).unwrap().len(),
            )),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_run_streams_six_executors_of_2_kib_with_a_tiny_live_status() {
    let (_dir, db) = temp_db("document_processing.db");
    let options = options(&db, &[]);
    assert_eq!((options.executors, options.output_kb, options.runs), (6, 2, 1));
    let (summary, out) = run(&options).await;

    let s = &summary.summary;
    assert_eq!((s.runs, s.completed, s.failed), (1, 1, 0), "{out}");
    // workflow_started, 4 per superstep, workflow_output, workflow_completed.
    assert_eq!(s.events, 2 + 4 * 6 + 1);
    assert!(s.stream_bytes > 6 * 2048, "{}", s.stream_bytes);
    assert!(s.max_live_status_bytes > 0, "the live status was sampled");
    assert!(s.max_live_status_bytes < 1024, "{}", s.max_live_status_bytes);

    let outcome = &summary.runs[0];
    assert_eq!(outcome.status, RuntimeStatus::Completed);
    let result = outcome.result.as_ref().expect("the workflow output");
    assert_eq!(result.document_id, "document-1");
    assert_eq!((result.executors_run, result.analysis_rounds), (6, 1));
    assert!(result.valid);

    // The stream: each stage once, in order, with an output of exactly 2 KiB.
    let events = stored_events(&db, &outcome.instance_id).await;
    let done = completions(&events);
    let expected: Vec<(String, u32, usize)> = EXECUTOR_IDS
        .iter()
        .enumerate()
        .map(|(i, id)| ((*id).to_owned(), i as u32 + 1, 2048))
        .collect();
    assert_eq!(done, expected);

    // One readable line per event, with progress, then the summary.
    let event_lines: Vec<&str> = out.lines().filter(|l| l.starts_with("[run 1/1] #")).collect();
    assert_eq!(event_lines.len() as u64, s.events, "{out}");
    for (n, line) in event_lines.iter().enumerate() {
        assert!(line.starts_with(&format!("[run 1/1] #{} ", n + 1)), "{line}");
    }
    assert!(
        out.contains("[run 1/1] #20 executor_completed analyse-document (2.1 KiB) superstep 5/6"),
        "{out}"
    );
    assert!(
        out.contains("runs:                1 completed, 0 failed (of 1)"),
        "{out}"
    );
    assert!(
        out.contains(&format!("events streamed:     {}", s.events)),
        "{out}"
    );
    assert!(
        out.contains(&format!("largest live status: {} bytes", s.max_live_status_bytes)),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nine_executors_of_4_kib_stream_far_more_than_16_kib_while_the_live_status_stays_under_1_kib() {
    let (_dir, db) = temp_db("nine.db");
    let options = options(&db, &["--executors", "9", "--output-kb", "4"]);
    let (summary, out) = run(&options).await;

    let s = &summary.summary;
    assert_eq!((s.runs, s.completed, s.failed), (1, 1, 0), "{out}");
    assert_eq!(s.events, 2 + 4 * 9 + 1);
    // The Durable Task host dies at 16 KB of accumulated events; here the
    // stream carries all of it and the live status does not grow.
    assert!(s.stream_bytes > 16 * 1024, "{}", s.stream_bytes);
    assert!(s.stream_bytes > 9 * 4096, "{}", s.stream_bytes);
    assert!(s.max_live_status_bytes < 1024, "{}", s.max_live_status_bytes);

    let result = summary.runs[0].result.as_ref().unwrap();
    assert_eq!((result.executors_run, result.analysis_rounds), (9, 3));
    let events = stored_events(&db, &summary.runs[0].instance_id).await;
    let done = completions(&events);
    let schedule = DocumentJob::new("x").executors(9).schedule();
    assert_eq!(
        done.iter().map(|(id, _, _)| id.as_str()).collect::<Vec<_>>(),
        schedule,
        "the analysis stages are repeated"
    );
    assert!(done
        .iter()
        .enumerate()
        .all(|(i, (_, step, bytes))| *step == i as u32 + 1 && *bytes == 4096));
    assert!(out.contains("superstep 9/9"), "{out}");
    assert!(
        out.contains("executor_completed analyse-document (4.1 KiB) superstep 8/9"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_one_line_per_event_then_the_summary() {
    let (_dir, db) = temp_db("json.db");
    let options = options(&db, &["--json", "--runs", "3", "--output-kb=1"]);
    let (summary, out) = run(&options).await;
    assert_eq!(summary.summary.completed, 3);

    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let (last, events) = lines.split_last().unwrap();

    // The events: exactly the four keys, the name repeated in the payload,
    // each run's sequence numbers 1..n in order.
    let mut seqs: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut bytes = 0;
    for line in events {
        let object = line.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["instance", "name", "payload", "seq"], "{line}");
        assert_eq!(line["payload"]["type"], line["name"], "{line}");
        seqs.entry(line["instance"].as_str().unwrap().to_owned())
            .or_default()
            .push(line["seq"].as_u64().unwrap());
        bytes += serde_json::to_vec(&line["payload"]).unwrap().len() as u64;
    }
    assert_eq!(seqs.len(), 3, "three runs");
    for run in seqs.values() {
        assert_eq!(*run, (1..=27).collect::<Vec<u64>>());
    }

    // The summary line, with exactly the documented keys.
    let summary_json = last["summary"].as_object().expect("a summary line");
    let mut keys: Vec<&str> = summary_json.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "completed",
            "events",
            "failed",
            "max_live_status_bytes",
            "runs",
            "seconds",
            "stream_bytes"
        ]
    );
    assert_eq!(last["summary"]["runs"], 3);
    assert_eq!(last["summary"]["completed"], 3);
    assert_eq!(last["summary"]["failed"], 0);
    assert_eq!(last["summary"]["events"], events.len() as u64);
    assert_eq!(last["summary"]["stream_bytes"], bytes);
    assert!(last["summary"]["max_live_status_bytes"].as_u64().unwrap() < 1024);
    assert!(last["summary"]["seconds"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_in_parallel_each_get_their_own_complete_stream() {
    let (_dir, db) = temp_db("parallel.db");
    let options = options(&db, &["--runs", "4", "--work-ms", "20"]);
    let (summary, out) = run(&options).await;
    assert_eq!(summary.summary.completed, 4, "{out}");
    assert_eq!(summary.summary.events, 4 * 27);
    let documents: Vec<&str> = summary
        .runs
        .iter()
        .map(|r| r.result.as_ref().unwrap().document_id.as_str())
        .collect();
    assert_eq!(
        documents,
        ["document-1", "document-2", "document-3", "document-4"]
    );
    for n in 1..=4 {
        let prefix = format!("[run {n}/4] #");
        assert_eq!(
            out.lines().filter(|l| l.starts_with(&prefix)).count(),
            27,
            "{out}"
        );
    }
}

#[test]
fn bad_flags_get_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--executors", "5"],
            "--executors takes a whole number from 6 to 1000, not \"5\"",
        ),
        (
            &["--executors", "1001"],
            "--executors takes a whole number from 6 to 1000, not \"1001\"",
        ),
        (
            &["--executors", "six"],
            "--executors takes a whole number from 6 to 1000, not \"six\"",
        ),
        (
            &["--output-kb", "0"],
            "--output-kb takes a whole number from 1 to 32, not \"0\"",
        ),
        (
            &["--output-kb=33"],
            "--output-kb takes a whole number from 1 to 32, not \"33\"",
        ),
        (
            &["--runs", "0"],
            "--runs takes a whole number from 1 to 10000, not \"0\"",
        ),
        (
            &["--runs", "-2"],
            "--runs takes a whole number from 1 to 10000, not \"-2\"",
        ),
        (
            &["--runs"],
            "--runs needs a value: a whole number from 1 to 10000",
        ),
        (
            &["--db", "--json"],
            "--db needs a value: a store URL such as sqlite://runs.db",
        ),
        (&["--json=yes"], "--json takes no value, not \"yes\""),
        (
            &["--external-workers=2"],
            "--external-workers takes no value, not \"2\"",
        ),
        (&["--fast"], "unknown flag \"--fast\" (see --help)"),
        (&["extra"], "unexpected argument \"extra\" (see --help)"),
    ];
    for (args, message) in cases {
        let error = RunOptions::parse(Args::new(args.iter().copied())).expect_err(message);
        assert_eq!(error.to_string(), *message, "{args:?}");
    }
    assert_eq!(RunOptions::parse(Args::new(["--help"])).unwrap(), Command::Help);
    assert_eq!(
        RunOptions::parse(Args::new(Vec::<String>::new())).unwrap(),
        Command::Run(RunOptions::default())
    );
    assert_eq!(RunOptions::default().db, "sqlite://document_processing.db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_cannot_be_opened_is_an_error_not_a_panic() {
    let mysql = options("mysql://localhost/runs", &[]);
    let error = document_processing::run(&mysql, Vec::new()).await.unwrap_err();
    assert!(matches!(error, RunError::Open { .. }), "{error:?}");
    assert!(error.to_string().contains("are not supported"), "{error}");

    // A PostgreSQL server that is not there.
    let unreachable = options("postgres://postgres@127.0.0.1:1/runs", &[]);
    let error = document_processing::run(&unreachable, Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(error, RunError::Open { .. }), "{error:?}");

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no/such/dir/x.db");
    let missing = options(missing.to_str().unwrap(), &[]);
    let error = document_processing::run(&missing, Vec::new()).await.unwrap_err();
    assert!(matches!(error, RunError::Open { .. }), "{error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_external_workers_the_runs_are_done_by_a_worker_elsewhere() {
    let (_dir, db) = temp_db("external.db");
    // The worker elsewhere: its own store on the same file, counting the
    // executor invocations it runs.
    let invocations = Arc::new(AtomicUsize::new(0));
    let counter = invocations.clone();
    let hooks = Hooks::new().on_invocation(move |_| {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let store = durable_workspace::open_store(&db).await.unwrap();
    let worker = Worker::start(store, register_with_hooks(Registry::new(), hooks)).unwrap();

    let options = options(&db, &["--external-workers", "--runs", "2"]);
    let (summary, out) = run(&options).await;
    worker.shutdown().await.unwrap();

    assert_eq!(summary.summary.completed, 2, "{out}");
    assert!(out.contains("no worker here"), "{out}");
    // Every invocation ran in the other worker, none in the program.
    assert_eq!(invocations.load(Ordering::SeqCst), 2 * 6);
}
