//! Attribute macros for durable-core and agent-workflows.
