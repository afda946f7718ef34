//! Building graphs: ids, shapes, message types.

use super::*;
use crate::message::type_tag;
use crate::{BuildError, ExecutorError, ExecutorExt, HandlerFuture, HandlerSet, Handles, WorkflowContext};

/// A hand-written executor (no macro), configurable id.
struct Echo(&'static str);

fn echo<'a>(_: &'a Echo, n: u32, _: &'a mut WorkflowContext) -> HandlerFuture<'a, u32> {
    Box::pin(async move { Ok(n) })
}

impl Executor for Echo {
    type Output = u32;

    fn id(&self) -> &str {
        self.0
    }

    fn handlers() -> HandlerSet<Self> {
        HandlerSet::new().on::<u32>(echo)
    }
}

impl Handles<u32> for Echo {}

struct Other;

fn other<'a>(_: &'a Other, _: u32, _: &'a mut WorkflowContext) -> HandlerFuture<'a, ()> {
    Box::pin(async { Err(ExecutorError::terminal("unused")) })
}

impl Executor for Other {
    type Output = ();

    fn id(&self) -> &str {
        "a"
    }

    fn handlers() -> HandlerSet<Self> {
        HandlerSet::new().on::<u32>(other)
    }
}

impl Handles<u32> for Other {}

struct Sum;

fn sum<'a>(_: &'a Sum, ns: Vec<u32>, _: &'a mut WorkflowContext) -> HandlerFuture<'a, u32> {
    Box::pin(async move { Ok(ns.iter().sum()) })
}

impl Executor for Sum {
    type Output = u32;

    fn id(&self) -> &str {
        "sum"
    }

    fn handlers() -> HandlerSet<Self> {
        HandlerSet::new().on::<Vec<u32>>(sum)
    }
}

impl Handles<Vec<u32>> for Sum {}

#[test]
fn the_same_executor_twice_is_one_node() {
    let workflow = WorkflowBuilder::start(Echo("a"))
        .then(Echo("b"))
        .add_edge(Echo("b"), Echo("a"))
        .build();
    assert_eq!(workflow.executor_ids(), ["a", "b"]);
    assert_eq!(workflow.graph.edges.len(), 2);
    assert_eq!(workflow.graph.start_type, type_tag::<u32>());
}

#[test]
fn two_executor_types_with_one_id_are_rejected() {
    let error = WorkflowBuilder::start(Echo("a"))
        .then(Other)
        .try_build()
        .unwrap_err();
    assert!(
        matches!(&error, BuildError::DuplicateExecutorId { id, .. } if id == "a"),
        "{error}"
    );
    assert!(error.to_string().contains("give one of them another id"));
    // Renaming one of them fixes it.
    let workflow = WorkflowBuilder::start(Echo("a"))
        .then(Other.with_id("other"))
        .build();
    assert_eq!(workflow.executor_ids(), ["a", "other"]);
}

#[test]
fn invalid_graphs_say_what_is_wrong() {
    let error = WorkflowBuilder::start(Echo("a/b")).try_build().unwrap_err();
    assert_eq!(error.to_string(), "invalid executor id \"a/b\": it contains '/'");
    let error = WorkflowBuilder::start(Echo("")).try_build().unwrap_err();
    assert_eq!(error.to_string(), "invalid executor id \"\": it is empty");
    let error = WorkflowBuilder::start(Echo("a"))
        .add_fan_in(FanIn::<u32>::new(), Sum)
        .try_build()
        .unwrap_err();
    assert_eq!(error, BuildError::EmptyFanIn { target: "sum".into() });
    let error = WorkflowBuilder::start(Echo("a"))
        .max_supersteps(0)
        .try_build()
        .unwrap_err();
    assert_eq!(error, BuildError::ZeroSuperstepLimit);
}

#[test]
#[should_panic(expected = "invalid workflow graph: two different executors have the id 'a'")]
fn build_panics_with_the_reason() {
    let _ = WorkflowBuilder::start(Echo("a")).then(Other).build();
}

mod v1 {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub(super) struct Doc;
}

mod v2 {
    #[derive(serde::Serialize, serde::Deserialize)]
    pub(super) struct Doc;
}

struct Convert;

fn convert<'a>(_: &'a Convert, _: u32, _: &'a mut WorkflowContext) -> HandlerFuture<'a, v1::Doc> {
    Box::pin(async { Ok(v1::Doc) })
}

fn convert_v2<'a>(_: &'a Convert, _: v2::Doc, _: &'a mut WorkflowContext) -> HandlerFuture<'a, v1::Doc> {
    Box::pin(async { Ok(v1::Doc) })
}

impl Executor for Convert {
    type Output = v1::Doc;

    fn id(&self) -> &str {
        "convert"
    }

    fn handlers() -> HandlerSet<Self> {
        HandlerSet::new().on::<u32>(convert).on::<v2::Doc>(convert_v2)
    }
}

impl Handles<u32> for Convert {}

#[test]
fn two_message_types_with_one_name_are_refused() {
    let error = WorkflowBuilder::start(Convert).try_build().unwrap_err();
    assert_eq!(
        error,
        BuildError::MessageTypeClash {
            tag: "Doc",
            first: std::any::type_name::<v2::Doc>(),
            second: std::any::type_name::<v1::Doc>(),
        }
    );
    assert!(error.to_string().contains("rename one of them"), "{error}");
}

#[test]
fn a_workflow_knows_the_names_of_its_message_types() {
    let workflow = WorkflowBuilder::start(Echo("a"))
        .add_fan_in(FanIn::<u32>::new().from(Echo("a")), Sum)
        .build();
    let mut known: Vec<&str> = workflow.graph.message_types.iter().copied().collect();
    known.sort_unstable();
    assert_eq!(known, ["Vec<u32>", "u32"]);
}
