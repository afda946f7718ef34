//! The approval example's code path (`examples/human_approval.rs` calls
//! `approval::run` and `approval::answer`): answers from the command line,
//! from standard input, and from "another terminal" (another store on the
//! same database file).

mod common;

use std::io::Cursor;

use agent_workflows::WorkflowClient;
use common::{temp_db, text, wait_for, within};
use durable_core::{Client, InstanceQuery, RuntimeStatus};
use durable_workspace::approval::{
    self, AnswerOptions, ApprovalCommand, ApprovalError, ApprovalOptions, ApprovalReport,
};
use durable_workspace::cli::{Args, Command};

fn options(db: &str, flags: &[&str]) -> ApprovalOptions {
    let mut args = vec!["--db", db, "--reviewer", "ada"];
    args.extend_from_slice(flags);
    match ApprovalCommand::parse(Args::new(args)).expect("valid flags") {
        Command::Run(ApprovalCommand::Run(options)) => options,
        other => panic!("not a run: {other:?}"),
    }
}

async fn run(options: &ApprovalOptions, stdin: &'static str) -> (ApprovalReport, String) {
    let mut out = Vec::new();
    let report = within(
        "the approval run",
        approval::run(options, Box::new(Cursor::new(stdin)), &mut out),
    )
    .await
    .expect("the program runs");
    (report, text(&out))
}

fn count(names: &[String], name: &str) -> usize {
    names.iter().filter(|n| *n == name).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_on_the_command_line_publishes_the_result() {
    let (_dir, db) = temp_db("approval.db");
    let (report, out) = run(&options(&db, &["--approve", "--comment", "totals match"]), "").await;

    assert_eq!(report.status, RuntimeStatus::Completed, "{out}");
    let outcome = report.outcome.expect("an outcome");
    assert!(outcome.approved);
    assert_eq!(outcome.reviewer, "ada");
    assert_eq!(outcome.comment.as_deref(), Some("totals match"));
    assert_eq!(outcome.published_as.as_deref(), Some("records/invoice-2041"));
    assert!(report.answered_here);
    assert_eq!(count(&report.events, "request_info"), 1);
    assert_eq!(count(&report.events, "request_answered"), 1);
    assert_eq!(
        report.events.last().map(String::as_str),
        Some("workflow_completed")
    );

    // The pending request was printed, then the outcome.
    assert!(
        out.contains("pending request review:2:0: please review this extracted result"),
        "{out}"
    );
    assert!(out.contains("invoice_number"), "{out}");
    assert!(
        out.contains("approved by ada (totals match); published as records/invoice-2041"),
        "{out}"
    );
    assert!(!out.contains("approve? type y or n"), "no question asked: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reject_on_the_command_line_ends_the_run_without_publishing() {
    let (_dir, db) = temp_db("approval.db");
    let (report, out) = run(&options(&db, &["--reject"]), "").await;

    assert_eq!(report.status, RuntimeStatus::Completed, "{out}");
    let outcome = report.outcome.expect("an outcome");
    assert!(!outcome.approved);
    assert_eq!(outcome.published_as, None);
    assert!(out.contains("rejected by ada; nothing published"), "{out}");
    // publish never ran: only extract-result and review (twice) completed.
    assert_eq!(
        count(&report.events, "executor_completed"),
        3,
        "{:?}",
        report.events
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_answer_is_read_from_standard_input() {
    let (_dir, db) = temp_db("approval.db");
    let (report, out) = run(&options(&db, &[]), "maybe\nyes looks right\n").await;

    let outcome = report.outcome.expect("an outcome");
    assert!(outcome.approved, "{out}");
    assert_eq!(outcome.comment.as_deref(), Some("looks right"));
    assert!(report.answered_here);
    assert!(out.contains("approve? type y or n"), "{out}");
    assert!(
        out.contains("human_approval -- answer --db"),
        "the other terminal's command: {out}"
    );
    assert!(out.contains("\"maybe\" is not an answer"), "{out}");
    assert!(out.contains("answering approve (looks right)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_terminal_can_answer_instead() {
    let (_dir, db) = temp_db("approval.db");
    let options = options(&db, &[]);
    // The other terminal: its own store on the same file (opened first:
    // two stores creating one new file at once race on the migrations).
    let store = durable_workspace::open_store(&db).await.unwrap();
    let client = WorkflowClient::new(Client::new(store));
    // This terminal's input ends without an answer.
    let program = tokio::spawn({
        let options = options.clone();
        async move { run(&options, "").await }
    });

    let id = wait_for("the run to start", || async {
        let page = client
            .client()
            .list_instances(InstanceQuery::new().name(approval::NAME))
            .await
            .unwrap();
        page.instances.first().map(|m| m.instance_id.clone())
    })
    .await;
    let pending = wait_for("the request", || async {
        let pending = client.pending_requests(&id).await.unwrap();
        (!pending.is_empty()).then_some(pending)
    })
    .await;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].executor_id, "review");

    let answer = AnswerOptions {
        db: db.clone(),
        instance_id: id.to_string(),
        request_id: None,
        approve: false,
        comment: Some("wrong supplier".into()),
        reviewer: "grace".into(),
    };
    let answered = approval::answer(&answer).await.expect("answered");
    assert_eq!(answered, pending[0].request_id);

    let (report, out) = program.await.unwrap();
    assert_eq!(report.instance_id, id);
    let outcome = report.outcome.expect("an outcome");
    assert!(!outcome.approved);
    assert_eq!(outcome.reviewer, "grace");
    assert_eq!(outcome.comment.as_deref(), Some("wrong supplier"));
    assert!(!report.answered_here);
    assert!(out.contains("no more input here"), "{out}");
    assert!(
        out.contains("rejected by grace (wrong supplier); nothing published"),
        "{out}"
    );

    // Nothing is pending any more: a second answer is refused.
    let error = approval::answer(&answer).await.unwrap_err();
    assert!(matches!(error, ApprovalError::NoRequest(_)), "{error:?}");
    assert!(error.to_string().contains("has no pending request"), "{error}");
    let unknown = AnswerOptions {
        instance_id: "no-such-run".into(),
        ..answer
    };
    let error = approval::answer(&unknown).await.unwrap_err();
    assert!(matches!(error, ApprovalError::NotFound(_)), "{error:?}");
}

#[test]
fn the_answer_command_needs_an_instance_and_a_decision() {
    let parse = |args: &[&str]| ApprovalCommand::parse(Args::new(args.iter().copied()));
    let Ok(Command::Run(ApprovalCommand::Answer(answer))) = parse(&[
        "answer",
        "--db",
        "x.db",
        "--instance",
        "run-1",
        "--request",
        "review:2:0",
        "--reject",
        "--comment",
        "no",
    ]) else {
        panic!("an answer command")
    };
    assert_eq!(answer.instance_id, "run-1");
    assert_eq!(answer.request_id.as_deref(), Some("review:2:0"));
    assert!(!answer.approve);
    assert_eq!(answer.comment.as_deref(), Some("no"));

    let errors: &[(&[&str], &str)] = &[
        (
            &["answer", "--db", "x.db", "--approve"],
            "answer needs --instance ID (the run to answer)",
        ),
        (
            &["answer", "--db", "x.db", "--instance", "i"],
            "answer needs --approve or --reject",
        ),
        (&["--approve", "--reject"], "give --approve or --reject, not both"),
        (&["--instance", "i"], "unknown flag \"--instance\" (see --help)"),
        (
            &["answer", "--document", "d"],
            "unknown flag \"--document\" (see --help)",
        ),
        (&["--comment"], "--comment needs a value: some text"),
        (&["--approve=yes"], "--approve takes no value, not \"yes\""),
    ];
    for (args, message) in errors {
        let error = parse(args).expect_err(message);
        assert_eq!(error.to_string(), *message, "{args:?}");
    }
}
