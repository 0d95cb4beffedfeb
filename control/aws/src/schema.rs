//! The DynamoDB tables' key schema: one definition for the adapters, the tests that create
//! tables in moto, and (later) the deployment template.
//!
//! - orders: partition key `run_id`, sort key `order_num` (`0001`...): a run's rows are one
//!   strongly consistent Query, in order (DESIGN §2 had pk `<run_id>:<order_num>` plus a
//!   GSI on `run_id`; a GSI is eventually consistent, which would make the orchestrator read
//!   stale statuses). TTL attribute `expires_at`.
//! - order_events: partition key `trace_id`, sort key `sk` (`<order_name>:<epoch_ms>:<event>`).
//!   TTL attribute `expires_at`.
//! - locks: partition key `pk` (`lock:<run_id>`).

/// Orders: partition key.
pub const ORDERS_PARTITION: &str = "run_id";
/// Orders: sort key.
pub const ORDERS_SORT: &str = "order_num";
/// Order events: partition key.
pub const EVENTS_PARTITION: &str = "trace_id";
/// Order events: sort key.
pub const EVENTS_SORT: &str = "sk";
/// Locks: partition key.
pub const LOCKS_PARTITION: &str = "pk";
/// The TTL attribute of orders and order_events (epoch seconds).
pub const TTL_ATTRIBUTE: &str = "expires_at";

/// A table's key: partition key and optional sort key, both strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableKey {
    /// Partition key attribute.
    pub partition: &'static str,
    /// Sort key attribute.
    pub sort: Option<&'static str>,
}

/// The orders table's key.
pub const ORDERS_KEY: TableKey = TableKey {
    partition: ORDERS_PARTITION,
    sort: Some(ORDERS_SORT),
};
/// The order_events table's key.
pub const EVENTS_KEY: TableKey = TableKey {
    partition: EVENTS_PARTITION,
    sort: Some(EVENTS_SORT),
};
/// The locks table's key.
pub const LOCKS_KEY: TableKey = TableKey {
    partition: LOCKS_PARTITION,
    sort: None,
};
