//! What the SQL stores share: how a batch of turns becomes rows
//! ([`plan`]), how values are stored ([`codec`]), and the statements whose
//! SQL is the same in both dialects ([`queries`]). Each backend only
//! encodes: SQLite as JSON arrays or bound multi-row inserts, PostgreSQL
//! as `UNNEST` columns.

pub(crate) mod codec;
pub(crate) mod plan;
pub(crate) mod queries;
