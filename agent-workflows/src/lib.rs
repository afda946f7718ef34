//! Graph workflows of executors run in supersteps, hosted on durable-core.
