//! The statements whose SQL is the same in both dialects, built over
//! [`QueryBuilder`] (which numbers the parameters as the dialect wants);
//! each backend runs them on its connection or transaction.

use sqlx::{Database, Encode, QueryBuilder, Type};

use super::codec::{i64_of, INSTANCE_TABLES};
use crate::store::ActivityKey;

/// Work item keys per statement of [`renew_leases`]: three parameters
/// each, well under both dialects' limits.
const KEYS_PER_STATEMENT: usize = 1_000;

/// Deletes every row of the instances `ids`, table by table, the instance
/// rows last: a purge, or a new instance taking a terminal one's id.
pub(crate) fn delete_instances<'a, DB>(ids: &'a [&'a str]) -> impl Iterator<Item = QueryBuilder<'a, DB>>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    INSTANCE_TABLES.into_iter().map(move |table| {
        let mut query = QueryBuilder::new(format!("DELETE FROM {table} WHERE instance_id IN ("));
        let mut list = query.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        query.push(")");
        query
    })
}

/// Extends `owner`'s leases until `until`: on every instance it holds,
/// and on the work items of `activities` (those it runs; a work item it
/// claimed but no longer runs is left to expire and run again).
pub(crate) fn renew_leases<'a, DB>(
    owner: &'a str,
    until: i64,
    activities: &'a [ActivityKey],
) -> Vec<QueryBuilder<'a, DB>>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut queries = Vec::with_capacity(1 + activities.len().div_ceil(KEYS_PER_STATEMENT));
    let mut instances = QueryBuilder::new("UPDATE instances SET lock_expires = ");
    instances
        .push_bind(until)
        .push(" WHERE lock_owner = ")
        .push_bind(owner);
    queries.push(instances);
    for chunk in activities.chunks(KEYS_PER_STATEMENT) {
        let mut query = QueryBuilder::new("UPDATE activities SET lock_expires = ");
        query
            .push_bind(until)
            .push(" WHERE lock_owner = ")
            .push_bind(owner)
            .push(" AND (instance_id, execution_id, task_id) IN (");
        query.push_values(chunk, |mut row, key| {
            row.push_bind(key.instance_id.as_str())
                .push_bind(key.execution_id.as_str())
                .push_bind(i64_of(key.task_id));
        });
        query.push(")");
        queries.push(query);
    }
    queries
}

/// Gives up every lease `owner` holds, on instances and work items.
pub(crate) fn release_leases<'a, DB>(owner: &'a str) -> [QueryBuilder<'a, DB>; 2]
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
{
    ["instances", "activities"].map(|table| {
        let mut query = QueryBuilder::new(format!(
            "UPDATE {table} SET lock_owner = NULL, lock_expires = 0 WHERE lock_owner = "
        ));
        query.push_bind(owner);
        query
    })
}

/// Gives up `owner`'s lease on an instance (or a lapsed one), keeping
/// every worker from it until `until`.
pub(crate) fn abandon_orchestration<'a, DB>(
    owner: &'a str,
    instance_id: &'a str,
    until: i64,
    now: i64,
) -> QueryBuilder<'a, DB>
where
    DB: Database,
    &'a str: Encode<'a, DB> + Type<DB>,
    i64: Encode<'a, DB> + Type<DB>,
{
    let mut query = QueryBuilder::new("UPDATE instances SET lock_owner = NULL, lock_expires = ");
    query
        .push_bind(until)
        .push(" WHERE instance_id = ")
        .push_bind(instance_id)
        .push(" AND (lock_owner = ")
        .push_bind(owner)
        .push(" OR lock_expires <= ")
        .push_bind(now)
        .push(")");
    query
}

/// The earliest time after `after` at which a message becomes visible or
/// a lease ends, as three columns (any may be `NULL`).
pub(crate) fn next_wakeup<'a, DB>(after: i64) -> QueryBuilder<'a, DB>
where
    DB: Database,
    i64: Encode<'a, DB> + Type<DB>,
{
    // `lock_expires > 0` lets SQLite read the partial index of leases.
    let mut query = QueryBuilder::new("SELECT (SELECT MIN(visible_at) FROM messages WHERE visible_at > ");
    query
        .push_bind(after)
        .push("), (SELECT MIN(lock_expires) FROM instances WHERE lock_expires > ")
        .push_bind(after)
        .push(" AND lock_expires > 0), (SELECT MIN(lock_expires) FROM activities WHERE lock_expires > ")
        .push_bind(after)
        .push(")");
    query
}
