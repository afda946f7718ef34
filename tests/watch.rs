//! The watch example's code path (`examples/watch.rs` calls `watch::run`):
//! following an instance from a cursor, live, until it ends.

mod common;

use agent_workflows::WorkflowClient;
use common::{temp_db, text, wait_for, within};
use durable_core::{Client, Registry, RuntimeStatus, Worker};
use durable_workspace::cli::{Args, Command};
use durable_workspace::document_processing::{DocumentJob, DocumentProcessing};
use durable_workspace::watch::{self, WatchError, WatchOptions};
use serde_json::Value;

struct Rig {
    db: String,
    _dir: tempfile::TempDir,
    client: WorkflowClient,
    worker: Worker,
}

async fn rig() -> Rig {
    let (dir, db) = temp_db("watch.db");
    let store = durable_workspace::open_store(&db).await.unwrap();
    let worker = Worker::start(store.clone(), durable_workspace::register(Registry::new())).unwrap();
    Rig {
        db,
        _dir: dir,
        client: WorkflowClient::new(Client::new(store)),
        worker,
    }
}

fn options(db: &str, instance: &str, flags: &[&str]) -> WatchOptions {
    let mut args = vec!["--db", db, "--instance", instance];
    args.extend_from_slice(flags);
    match WatchOptions::parse(Args::new(args)).expect("valid flags") {
        Command::Run(options) => options,
        Command::Help => panic!("not a help request"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_finished_run_from_a_cursor_prints_the_rest_of_its_stream() {
    let rig = rig().await;
    let id = rig
        .client
        .start(DocumentProcessing, &DocumentJob::new("watched"))
        .await
        .unwrap();
    rig.client.wait_for_completion(&id, common::WAIT).await.unwrap();

    let mut out = Vec::new();
    let report = within(
        "the watch",
        watch::run(&options(&rig.db, id.as_str(), &["--after", "10"]), &mut out),
    )
    .await
    .unwrap();
    let out = text(&out);

    assert_eq!(report.status, RuntimeStatus::Completed);
    assert_eq!(report.seqs, (11..=27).collect::<Vec<u64>>());
    assert_eq!(
        report.names.last().map(String::as_str),
        Some("workflow_completed")
    );
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!(
            "watching {id} (document-processing, Completed, 27 events so far) after #10"
        )),
        "{out}"
    );
    assert!(lines[1].starts_with("#11 "), "{out}");
    // Document-processing runs show their progress.
    assert!(
        out.contains("executor_completed validate-outputs (2.1 KiB) superstep 6/6"),
        "{out}"
    );
    assert!(
        lines.last().unwrap().contains("is Completed: 17 event(s)"),
        "{out}"
    );
    rig.worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watching_a_live_run_follows_it_until_it_ends() {
    let rig = rig().await;
    let job = DocumentJob::new("live").executors(8).work_ms(50);
    let id = rig.client.start(DocumentProcessing, &job).await.unwrap();
    // Attach once it is under way, from the third event on, as JSON lines.
    wait_for("some progress", || async {
        let meta = rig.client.client().get_instance(&id).await.unwrap().unwrap();
        (meta.stream_len >= 3).then_some(())
    })
    .await;

    let mut out = Vec::new();
    let report = within(
        "the watch",
        watch::run(&options(&rig.db, id.as_str(), &["--after=2", "--json"]), &mut out),
    )
    .await
    .unwrap();

    let total = 2 + 4 * 8 + 1;
    assert_eq!(report.status, RuntimeStatus::Completed);
    assert_eq!(report.seqs, (3..=total).collect::<Vec<u64>>());
    let lines: Vec<Value> = text(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, total - 2, "only event lines in JSON mode");
    for (line, seq) in lines.iter().zip(3..) {
        assert_eq!(line["instance"], id.as_str());
        assert_eq!(line["seq"], seq);
        assert_eq!(line["payload"]["type"], line["name"]);
    }
    rig.worker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_instance_is_a_clear_error() {
    let rig = rig().await;
    let error = watch::run(&options(&rig.db, "no-such-run", &[]), Vec::new())
        .await
        .unwrap_err();
    assert!(matches!(error, WatchError::NotFound(_)), "{error:?}");
    assert_eq!(error.to_string(), "no instance \"no-such-run\" in this store");
    rig.worker.shutdown().await.unwrap();
}

#[test]
fn bad_flags_get_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--instance", "i"],
            "--db URL is required: the store the instance is in",
        ),
        (
            &["--db", "x.db"],
            "--instance ID is required: the instance to follow",
        ),
        (
            &["--db", "x.db", "--instance", "i", "--after", "-1"],
            "--after takes a sequence number (0 for the start), not \"-1\"",
        ),
        (
            &["--db", "x.db", "--instance", "i", "--after", "ten"],
            "--after takes a sequence number (0 for the start), not \"ten\"",
        ),
        (
            &["--db", "x.db", "--instance"],
            "--instance needs a value: an instance id",
        ),
        (&["--follow"], "unknown flag \"--follow\" (see --help)"),
    ];
    for (args, message) in cases {
        let error = WatchOptions::parse(Args::new(args.iter().copied())).expect_err(message);
        assert_eq!(error.to_string(), *message, "{args:?}");
    }
}
