//! [`DynamoOrderStore`]: the orders, order_events and locks tables on DynamoDB.
//!
//! Every status change is an `UpdateItem` conditioned on the expected status — several of
//! one step together in one `TransactWriteItems`, all or none — and every lock operation one
//! `UpdateItem` on the lock row (DESIGN §3): acquiring sets the owner only where there is
//! none (`if_not_exists`) and counts the wake-up either way, so a notification that finds
//! the lock held costs one call; the lock item has an owner and lease while held, a
//! `marks` count, and `status = completed` once finalized; a step's release goes in one
//! `TransactWriteItems` with its last status changes and events. Reads are
//! strongly consistent, so the orchestrator never acts on a status older than its own
//! writes. Inserting a run's orders is a transaction per 100 rows (DynamoDB's limit); when a
//! later batch fails, the earlier ones are deleted again, so a run is inserted whole or not
//! at all. Events are written 25 to a `BatchWriteItem` (a pass writes a step's together).
//! Rows are the engine's serde types stored as native attributes (see `item`).

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, PutRequest, ReturnValue, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update, WriteRequest,
};
use serde::de::DeserializeOwned;
use sluice_contract::{OrderNum, OrderStatus, RunId, TraceId};
use sluice_ports::StoreError;
use sluice_ports::{
    AcquireOutcome, LockState, LockStatus, OrderEvent, OrderMove, OrderRecord, OrderStore,
    ReleaseOutcome, StepWrites, Transition,
};

use crate::calls::CallCounter;
use crate::capacity::{Capacity, Written};
use crate::schema::{
    EVENTS_PARTITION, EVENTS_SORT, LOCKS_PARTITION, ORDERS_PARTITION, ORDERS_SORT, TTL_ATTRIBUTE,
};
use crate::sdk_error::backend;
use crate::settings::AwsSettings;

const SERVICE: &str = "dynamodb";
/// Most items in one `TransactWriteItems`.
const MAX_TRANSACTION_ITEMS: usize = 100;
/// Most items in one `BatchWriteItem`.
const MAX_BATCH_WRITE_ITEMS: usize = 25;
/// Calls for one batch of events before the ones left unprocessed are given up.
const BATCH_WRITE_TRIES: u32 = 5;
const SECONDS_PER_DAY: u64 = 24 * 3600;

type Item = HashMap<String, AttributeValue>;

/// The three tables.
#[derive(Debug, Clone)]
pub struct DynamoOrderStore {
    client: aws_sdk_dynamodb::Client,
    orders_table: String,
    events_table: String,
    locks_table: String,
    order_ttl_days: u64,
    event_ttl_days: u64,
    calls: CallCounter,
    capacity: std::sync::Arc<Capacity>,
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> bool {
    matches!(
        error.code(),
        Some(
            "ConditionalCheckFailedException"
                | "TransactionCanceledException"
                // The same batch token with other rows: a second insert for the same run.
                | "IdempotentParameterMismatchException"
        )
    )
}

fn parse<T: DeserializeOwned>(what: &str, item: &Item) -> Result<T, StoreError> {
    serde_dynamo::from_item(item.clone()).map_err(|e| StoreError::Backend {
        what: what.to_owned(),
        message: format!("unreadable row: {e}"),
    })
}

/// `row` as an item of native attributes (a number is `N`, a string `S`), which conditions
/// and updates can address; absent values (`None`) are left out rather than stored as
/// `NULL`, so an item has only the attributes its row has.
fn to_item<T: serde::Serialize>(what: impl Fn() -> String, row: &T) -> Result<Item, StoreError> {
    let mut item: Item = serde_dynamo::to_item(row).map_err(|e| StoreError::Backend {
        what: what(),
        message: e.to_string(),
    })?;
    item.retain(|_, value| !value.is_null());
    Ok(item)
}

/// The TTL attribute: `ttl_days` after `from` (seconds since the epoch).
fn expires_at(from: u64, ttl_days: u64) -> AttributeValue {
    AttributeValue::N((from + ttl_days * SECONDS_PER_DAY).to_string())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

/// A string attribute of `item` (empty when absent).
fn text(item: &Item, name: &str) -> String {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .cloned()
        .unwrap_or_default()
}

fn lock_pk(run_id: &RunId) -> AttributeValue {
    s(format!("lock:{run_id}"))
}

impl DynamoOrderStore {
    /// The tables named in `settings`, counting calls in `calls`.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        settings: &AwsSettings,
        calls: CallCounter,
    ) -> Self {
        DynamoOrderStore {
            client,
            orders_table: settings.orders_table.clone(),
            events_table: settings.events_table.clone(),
            locks_table: settings.locks_table.clone(),
            order_ttl_days: settings.order_ttl_days,
            event_ttl_days: settings.event_ttl_days,
            calls,
            capacity: std::sync::Arc::default(),
        }
    }

    fn order_key(run_id: &RunId, order_num: OrderNum) -> Item {
        HashMap::from([
            (ORDERS_PARTITION.to_owned(), s(run_id.to_string())),
            (ORDERS_SORT.to_owned(), s(order_num.to_string())),
        ])
    }

    fn order_item(&self, order: &OrderRecord) -> Result<Item, StoreError> {
        let mut item = to_item(|| format!("order {}", order.pk()), order)?;
        // Kept for the retention after the job's deadline, not after init: a run may last
        // as long as its job_timeout (30 days at most).
        let deadline = order.job_deadline_ms / 1000;
        item.insert(
            TTL_ATTRIBUTE.to_owned(),
            expires_at(deadline, self.order_ttl_days),
        );
        Ok(item)
    }

    /// Deletes orders inserted by an earlier batch of a failed insert (best effort).
    async fn undo_insert(&self, inserted: &[OrderRecord]) {
        for order in inserted {
            self.calls.count(SERVICE, "DeleteItem");
            (self.capacity).write(&self.calls, false, [Written::OrderRow]);
            let deleted = self
                .client
                .delete_item()
                .table_name(&self.orders_table)
                .set_key(Some(Self::order_key(&order.run_id, order.plan.order_num)))
                .send()
                .await;
            if let Err(error) = deleted {
                tracing::error!(order = %order.pk(), error = %DisplayErrorContext(&error), "could not undo a partial insert");
            }
        }
    }

    /// Writes one `BatchWriteItem` of events, then what DynamoDB left unprocessed (it may,
    /// under load) a few times with backoff.
    async fn write_batch(&self, mut batch: Vec<WriteRequest>) -> Result<(), StoreError> {
        let mut delay = Duration::from_millis(50);
        for _ in 0..BATCH_WRITE_TRIES {
            self.calls.count(SERVICE, "BatchWriteItem");
            let items = batch.iter().filter_map(|request| request.put_request());
            (self.capacity).write(&self.calls, false, items.map(|p| Written::Event(p.item())));
            let answer = self
                .client
                .batch_write_item()
                .request_items(&self.events_table, batch)
                .send()
                .await
                .map_err(|e| backend("recording events".to_owned(), e))?;
            batch = answer
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.events_table))
                .unwrap_or_default();
            if batch.is_empty() {
                return Ok(());
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(StoreError::Unavailable {
            what: "recording events".to_owned(),
            message: format!(
                "DynamoDB left {} of them unprocessed {BATCH_WRITE_TRIES} times",
                batch.len()
            ),
        })
    }

    /// Every row of `table` whose partition key `partition` is `value`, in sort-key order
    /// (a consistent Query, all pages).
    async fn query_all<T: DeserializeOwned>(
        &self,
        table: &str,
        partition: &str,
        value: &str,
        what: &str,
    ) -> Result<Vec<T>, StoreError> {
        let mut rows = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            self.calls.count(SERVICE, "Query");
            let page = self
                .client
                .query()
                .table_name(table)
                .key_condition_expression("#partition = :value")
                .expression_attribute_names("#partition", partition)
                .expression_attribute_values(":value", s(value))
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| backend(format!("querying {what}"), e))?;
            self.capacity.read(&self.calls, page.items());
            for item in page.items() {
                if table == self.orders_table {
                    self.capacity.saw_order_row(item);
                }
                rows.push(parse(&format!("a row of {what}"), item)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        Ok(rows)
    }

    /// The transaction items of `moves` of `run_id`'s orders, each conditional on its
    /// order's status (checked against the status table first).
    fn move_items(
        &self,
        run_id: &RunId,
        moves: &[OrderMove],
    ) -> Result<Vec<TransactWriteItem>, StoreError> {
        (moves.iter())
            .map(|m| {
                let update = self.transition_update(run_id, m)?;
                Ok(TransactWriteItem::builder().update(update).build())
            })
            .collect()
    }

    /// The transaction items of a step's `writes` of `run_id`: its rows' puts (see
    /// [`Self::order_put`]), its moves (see [`Self::move_items`]), then its events' puts;
    /// and the items put, to bill.
    fn step_items(&self, run_id: &RunId, writes: &StepWrites) -> Result<StepItems, StoreError> {
        let mut items = Vec::with_capacity(writes.len());
        let mut rows = Vec::with_capacity(writes.inserts.len());
        for order in &writes.inserts {
            let row = self.order_item(order)?;
            items.push(self.order_put(order, row.clone())?);
            rows.push(row);
        }
        items.extend(self.move_items(run_id, &writes.moves)?);
        let events = self.event_items(&writes.events)?;
        for item in &events {
            items.push(self.event_put(run_id, item.clone())?);
        }
        Ok(StepItems {
            items,
            rows,
            events,
        })
    }

    /// `order`'s row (`row`, its item) put where no row with its key exists.
    fn order_put(&self, order: &OrderRecord, row: Item) -> Result<TransactWriteItem, StoreError> {
        self.capacity.saw_order_row(&row);
        let put = Put::builder()
            .table_name(&self.orders_table)
            .set_item(Some(row))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", ORDERS_PARTITION)
            .build()
            .map_err(|e| StoreError::Backend {
                what: format!("order {}", order.pk()),
                message: e.to_string(),
            })?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// `m` of `run_id`'s order as an update conditioned on its status (checked against
    /// the status table first), for a transaction or alone ([`Self::alone`]).
    fn transition_update(&self, run_id: &RunId, m: &OrderMove) -> Result<Update, StoreError> {
        m.change.check_allowed(run_id, m.order_num, m.from)?;
        let update = TransitionUpdate::new(m.from, &m.change);
        Update::builder()
            .table_name(&self.orders_table)
            .set_key(Some(Self::order_key(run_id, m.order_num)))
            .update_expression(update.expression)
            .condition_expression(TransitionUpdate::CONDITION)
            .set_expression_attribute_names(Some(update.names))
            .set_expression_attribute_values(Some(update.values))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Backend {
                what: format!("order {run_id}:{}", m.order_num),
                message: format!("building its update: {e}"),
            })
    }

    /// `run_id`'s lock released by `owner` if its count is still `seen_marks`, as an update
    /// that returns the lock as it is when its condition fails.
    fn release_update(
        &self,
        run_id: &RunId,
        owner: &str,
        seen_marks: u64,
    ) -> Result<Update, StoreError> {
        Update::builder()
            .table_name(&self.locks_table)
            .key(LOCKS_PARTITION, lock_pk(run_id))
            .update_expression("REMOVE #owner, lease_until, #status")
            .condition_expression(format!("{HELD_BY_OWNER} AND marks = :seen"))
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":held", s(LockStatus::Held.as_str()))
            .expression_attribute_values(":seen", number(seen_marks))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(|e| StoreError::Backend {
                what: format!("lock:{run_id}"),
                message: format!("building its release: {e}"),
            })
    }

    /// Sends `items` as one `TransactWriteItems`, all or none, billed as `billed`.
    async fn transact<'a>(
        &self,
        items: Vec<TransactWriteItem>,
        billed: impl IntoIterator<Item = Written<'a>>,
        about: Transaction,
    ) -> Result<(), StoreError> {
        self.calls.count(SERVICE, "TransactWriteItems");
        self.capacity.write(&self.calls, true, billed);
        let sent = (self.client.transact_write_items())
            .set_transact_items(Some(items))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Err(StoreError::ConditionFailed {
                what: about.what,
                detail: format!("{}: {}", about.refused, DisplayErrorContext(&e)),
            }),
            Err(e) => Err(backend(about.doing, e)),
        }
    }

    /// `update` sent alone, as an `UpdateItem`: a transaction's item and a single write are
    /// one shape, built once.
    fn alone(&self, update: Update) -> UpdateItemFluentBuilder {
        self.client
            .update_item()
            .table_name(update.table_name)
            .set_key(Some(update.key))
            .update_expression(update.update_expression)
            .set_condition_expression(update.condition_expression)
            .set_expression_attribute_names(update.expression_attribute_names)
            .set_expression_attribute_values(update.expression_attribute_values)
            .set_return_values_on_condition_check_failure(
                update.return_values_on_condition_check_failure,
            )
    }

    /// The items of `events`, one per key: one request may not name a key twice, and the
    /// last event of a key wins, as it would written one after the other.
    fn event_items(&self, events: &[OrderEvent]) -> Result<Vec<Item>, StoreError> {
        let mut by_key: HashMap<(String, String), Item> = HashMap::new();
        let expires = expires_at(now_secs(), self.event_ttl_days);
        for event in events {
            let mut item = to_item(|| format!("event {}", event.sk()), event)?;
            item.insert(EVENTS_SORT.to_owned(), s(event.sk()));
            item.insert(TTL_ATTRIBUTE.to_owned(), expires.clone());
            by_key.insert((event.trace_id.to_string(), event.sk()), item);
        }
        Ok(by_key.into_values().collect())
    }

    /// An event's item (see [`Self::event_items`]) put in a transaction of `run_id`'s.
    fn event_put(&self, run_id: &RunId, item: Item) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.events_table)
            .set_item(Some(item))
            .build()
            .map_err(|e| StoreError::Backend {
                what: format!("the events of run {run_id}"),
                message: format!("building their puts: {e}"),
            })?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// Reads the lock row (consistent).
    async fn lock_item(&self, run_id: &RunId) -> Result<Option<Item>, StoreError> {
        self.calls.count(SERVICE, "GetItem");
        let output = self
            .client
            .get_item()
            .table_name(&self.locks_table)
            .key(LOCKS_PARTITION, lock_pk(run_id))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend(format!("reading lock:{run_id}"), e))?;
        self.capacity.read(&self.calls, output.item.as_ref());
        Ok(output.item)
    }

    /// Takes over a lock whose lease ended (or that a version before counted wake-ups left
    /// `released`), conditional on it being exactly as `seen` — the call that found it so
    /// has counted the caller's wake-up on it already. A lost race means someone else
    /// holds or released it after that count, so the wake-up is theirs to process.
    async fn take_over_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        lease_until_ms: u64,
        seen: &Item,
    ) -> Result<AcquireOutcome, StoreError> {
        self.count_lock_update();
        let taken = self
            .client
            .update_item()
            .table_name(&self.locks_table)
            .key(LOCKS_PARTITION, lock_pk(run_id))
            .update_expression("SET #owner = :owner, lease_until = :lease REMOVE #status")
            // Not a lock its holder completed meanwhile (it keeps owner and lease).
            .condition_expression(
                "#owner = :old_owner AND lease_until = :old_lease \
                 AND (attribute_not_exists(#status) OR #status <> :completed)",
            )
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":lease", number(lease_until_ms))
            .expression_attribute_values(":old_owner", s(text(seen, "owner")))
            .expression_attribute_values(":old_lease", number(lock_lease(seen)))
            .expression_attribute_values(":completed", s(LockStatus::Completed.as_str()))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match taken {
            Ok(answer) => Ok(AcquireOutcome::Acquired {
                missed: true,
                marks: lock_marks(&answer.attributes.unwrap_or_default()),
            }),
            Err(e) => match failed_condition_item(&e) {
                Some(now) => Ok(match read_lock(run_id, &now)? {
                    LockRead::Completed => AcquireOutcome::Completed,
                    // The SDK's retry of a takeover that was applied.
                    LockRead::HeldBy(holder, _) if holder == owner => AcquireOutcome::Acquired {
                        missed: true,
                        marks: lock_marks(&now),
                    },
                    _ => AcquireOutcome::Marked,
                }),
                None => Err(backend(format!("taking over lock:{run_id}"), e)),
            },
        }
    }

    /// Counts an `UpdateItem` of a lock item, and the write unit it is billed.
    fn count_lock_update(&self) {
        self.calls.count(SERVICE, "UpdateItem");
        (self.capacity).write(&self.calls, false, [Written::Lock]);
    }

    /// One conditional update of the lock row held by `owner`; the row as it left it.
    async fn update_held_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        set: &str,
        extra_condition: &str,
        values: &[(&str, AttributeValue)],
        what: &str,
    ) -> Result<Item, StoreError> {
        self.count_lock_update();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.locks_table)
            .key(LOCKS_PARTITION, lock_pk(run_id))
            .return_values(ReturnValue::AllNew)
            .update_expression(set)
            .condition_expression(format!("{HELD_BY_OWNER}{extra_condition}"))
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":held", s(LockStatus::Held.as_str()));
        for (name, value) in values {
            update = update.expression_attribute_values(*name, value.clone());
        }
        match update.send().await {
            Ok(output) => output.attributes.ok_or_else(|| StoreError::Backend {
                what: format!("{what} lock:{run_id}"),
                message: "the update answered no item, though it asked for it".to_owned(),
            }),
            Err(e) if is_condition_failure(&e) => Err(StoreError::ConditionFailed {
                what: format!("lock:{run_id}"),
                detail: format!("{what}: not held by {owner}"),
            }),
            Err(e) => Err(backend(format!("{what} lock:{run_id}"), e)),
        }
    }
}

/// What a transaction is about, for its errors: the items whose condition may fail
/// (`what`), what such a failure means (`refused`), and what was being done (`doing`).
struct Transaction {
    what: String,
    refused: String,
    doing: String,
}

/// A status change as an update expression, conditioned on the status it changes from.
struct TransitionUpdate {
    expression: String,
    names: HashMap<String, String>,
    values: Item,
}

impl TransitionUpdate {
    const CONDITION: &'static str = "attribute_exists(#status) AND #status = :from";

    fn new(from: OrderStatus, change: &Transition) -> Self {
        let mut sets = vec!["#status = :to".to_owned()];
        let mut names = HashMap::from([("#status".to_owned(), "status".to_owned())]);
        let mut values = Item::from([
            (":to".to_owned(), s(change.to.as_str())),
            (":from".to_owned(), s(from.as_str())),
        ]);
        let fields: [(&str, Option<AttributeValue>); 11] = [
            ("attempt", change.attempt.as_ref().map(|a| s(a.as_str()))),
            ("dispatched_at_ms", change.dispatched_at_ms.map(number)),
            ("finished_at_ms", change.finished_at_ms.map(number)),
            ("duration_ms", change.duration_ms.map(number)),
            (
                "exit_code",
                change.exit_code.map(|n| AttributeValue::N(n.to_string())),
            ),
            ("reason", change.reason.as_deref().map(s)),
            ("log_stored", change.log_stored.map(AttributeValue::Bool)),
            ("log_key", change.log_key.as_deref().map(s)),
            ("retry_at_ms", change.retry_at_ms.map(number)),
            ("outputs_key", change.outputs_key.as_deref().map(s)),
            (
                "ran_sandboxed",
                (change.ran_sandboxed.as_ref()).map(|granted| {
                    serde_dynamo::to_attribute_value(granted).expect("grants are a DynamoDB map")
                }),
            ),
        ];
        for (field, value) in fields {
            if let Some(value) = value {
                sets.push(format!("#{field} = :{field}"));
                names.insert(format!("#{field}"), field.to_owned());
                values.insert(format!(":{field}"), value);
            }
        }
        if let Some(ended) = &change.ended_attempt {
            // Appended: the condition on the status keeps a write made again from
            // appending twice.
            sets.push(
                "#attempts = list_append(if_not_exists(#attempts, :none), :ended)".to_owned(),
            );
            names.insert("#attempts".to_owned(), "attempts".to_owned());
            values.insert(":none".to_owned(), AttributeValue::L(Vec::new()));
            let ended = serde_dynamo::to_attribute_value(ended)
                .expect("an attempt record is a DynamoDB map");
            values.insert(":ended".to_owned(), AttributeValue::L(vec![ended]));
        }
        // A new attempt has not run yet: how the last one ran goes (see `Transition`).
        let removes = match (&change.attempt, &change.ran_sandboxed) {
            (Some(_), None) => {
                names.insert("#ran_sandboxed".to_owned(), "ran_sandboxed".to_owned());
                " REMOVE #ran_sandboxed"
            }
            _ => "",
        };
        TransitionUpdate {
            expression: format!("SET {}{removes}", sets.join(", ")),
            names,
            values,
        }
    }
}

/// The condition of every write only the lock's holder may make: `owner` is the caller's
/// and the lock is held (a lock item has no `status` while held, `held` when a version
/// before counted wake-ups wrote it).
const HELD_BY_OWNER: &str =
    "#owner = :owner AND (attribute_not_exists(#status) OR #status = :held)";

/// What a lock item says.
enum LockRead {
    /// Finalized.
    Completed,
    /// Held by this owner until this lease end.
    HeldBy(String, u64),
    /// Nobody holds it.
    Free,
}

/// Reads a lock item: `status` is `completed` once finalized (or, written by a version
/// before counted wake-ups, `held`/`released`); otherwise it is held while it has an owner.
fn read_lock(run_id: &RunId, item: &Item) -> Result<LockRead, StoreError> {
    let status = text(item, "status");
    let legacy = (!status.is_empty())
        .then(|| {
            LockStatus::parse(&status).ok_or_else(|| StoreError::Backend {
                what: format!("lock of run {run_id}"),
                message: format!("unknown lock status {status:?}"),
            })
        })
        .transpose()?;
    Ok(match legacy {
        Some(LockStatus::Completed) => LockRead::Completed,
        Some(LockStatus::Released) => LockRead::Free,
        _ if item.contains_key("owner") => LockRead::HeldBy(text(item, "owner"), lock_lease(item)),
        _ => LockRead::Free,
    })
}

/// A number attribute of a lock item (`0` when absent).
fn lock_number(item: &Item, name: &str) -> u64 {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
        .unwrap_or_default()
}

fn lock_lease(item: &Item) -> u64 {
    lock_number(item, "lease_until")
}

fn lock_marks(item: &Item) -> u64 {
    lock_number(item, "marks")
}

fn number(n: u64) -> AttributeValue {
    AttributeValue::N(n.to_string())
}

/// The item a failed condition returned (the call asked for it), or `None` when the call
/// failed otherwise.
fn failed_condition_item<R>(error: &SdkError<UpdateItemError, R>) -> Option<Item> {
    match error.as_service_error() {
        Some(UpdateItemError::ConditionalCheckFailedException(failed)) => {
            Some(failed.item().cloned().unwrap_or_default())
        }
        _ => None,
    }
}

#[async_trait]
impl OrderStore for DynamoOrderStore {
    async fn insert_orders(
        &self,
        orders: &[OrderRecord],
        events: &[OrderEvent],
    ) -> Result<(), StoreError> {
        let event_items = self.event_items(events)?;
        let batches = orders.len().div_ceil(MAX_TRANSACTION_ITEMS);
        // The events go with the last batch when they fit in its transaction.
        let events_fit = batches > 0
            && orders.len() - (batches - 1) * MAX_TRANSACTION_ITEMS + event_items.len()
                <= MAX_TRANSACTION_ITEMS;
        for (batch_index, batch) in orders.chunks(MAX_TRANSACTION_ITEMS).enumerate() {
            let with_events: &[Item] = if events_fit && batch_index + 1 == batches {
                &event_items
            } else {
                &[]
            };
            let mut items = Vec::with_capacity(batch.len() + with_events.len());
            let rows = (batch.iter())
                .map(|order| self.order_item(order))
                .collect::<Result<Vec<_>, _>>()?;
            for item in with_events {
                items.push(self.event_put(&batch[0].run_id, item.clone())?);
            }
            for (order, row) in batch.iter().zip(&rows) {
                items.push(self.order_put(order, row.clone())?);
            }
            let billed =
                (rows.iter().map(Written::Item)).chain(with_events.iter().map(Written::Event));
            (self.capacity).write(&self.calls, true, billed);
            self.calls.count(SERVICE, "TransactWriteItems");
            // The token makes the SDK's own retry of a transaction that was applied (its
            // answer lost) succeed, rather than fail its conditions on its own rows.
            let first = &batch[0];
            let token = format!("{}-{batch_index}", first.run_id.as_str().replace('-', ""));
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .client_request_token(token)
                .send()
                .await;
            if let Err(error) = written {
                // A batch whose conditions failed was not applied (a retry of an applied one
                // succeeds by its token): undo the ones before it. One that failed otherwise
                // may have been applied though its answer was lost: undo it too.
                let failed_batch_applied = !is_condition_failure(&error);
                let end = if failed_batch_applied {
                    ((batch_index + 1) * MAX_TRANSACTION_ITEMS).min(orders.len())
                } else {
                    batch_index * MAX_TRANSACTION_ITEMS
                };
                self.undo_insert(&orders[..end]).await;
                return Err(if is_condition_failure(&error) {
                    StoreError::ConditionFailed {
                        what: format!("orders of run {}", first.run_id),
                        detail: "an order with one of these keys exists".to_owned(),
                    }
                } else {
                    backend(
                        format!("inserting the orders of run {}", first.run_id),
                        error,
                    )
                });
            }
        }
        if events_fit {
            Ok(())
        } else {
            self.put_events(events).await
        }
    }

    async fn run_orders(&self, run_id: &RunId) -> Result<Vec<OrderRecord>, StoreError> {
        self.query_all(
            &self.orders_table,
            ORDERS_PARTITION,
            &run_id.to_string(),
            &format!("the orders of run {run_id}"),
        )
        .await
    }

    async fn get_order(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
    ) -> Result<OrderRecord, StoreError> {
        self.calls.count(SERVICE, "GetItem");
        let output = self
            .client
            .get_item()
            .table_name(&self.orders_table)
            .set_key(Some(Self::order_key(run_id, order_num)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| backend(format!("reading order {run_id}:{order_num}"), e))?;
        self.capacity.read(&self.calls, output.item.as_ref());
        match output.item {
            Some(item) => parse(&format!("order {run_id}:{order_num}"), &item),
            None => Err(StoreError::NotFound {
                key: format!("order {run_id}:{order_num}"),
            }),
        }
    }

    async fn transition(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        from: OrderStatus,
        change: &Transition,
    ) -> Result<OrderRecord, StoreError> {
        let m = OrderMove {
            order_num,
            from,
            change: change.clone(),
        };
        let update = self.transition_update(run_id, &m)?;
        self.calls.count(SERVICE, "UpdateItem");
        let updated = (self.alone(update))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        let what = format!("order {run_id}:{order_num}");
        // Billed at the row's size, which only a successful answer gives.
        let row = updated.as_ref().ok().and_then(|o| o.attributes.as_ref());
        row.into_iter()
            .for_each(|row| self.capacity.saw_order_row(row));
        (self.capacity).write(&self.calls, false, [Written::OrderRow]);
        match updated {
            Ok(output) => parse(&what, &output.attributes.unwrap_or_default()),
            Err(e) => match failed_condition_item(&e) {
                // Missing, or in another status: say which.
                Some(current) => Err(match current.get("status") {
                    None => StoreError::NotFound { key: what },
                    Some(found) => StoreError::ConditionFailed {
                        what,
                        detail: format!(
                            "expected {from}, found {} (wanted {})",
                            found.as_s().map(String::as_str).unwrap_or("?"),
                            change.to
                        ),
                    },
                }),
                None => Err(backend(format!("updating {what}"), e)),
            },
        }
    }

    async fn transition_together(
        &self,
        run_id: &RunId,
        writes: &StepWrites,
    ) -> Result<(), StoreError> {
        let StepItems {
            items,
            rows,
            events,
        } = self.step_items(run_id, writes)?;
        let count = writes.moves.len();
        self.transact(
            items,
            billed(writes, &rows, &events),
            Transaction {
                what: format!("{count} orders of run {run_id}"),
                refused: "one was not in the status expected".to_owned(),
                doing: format!("updating {count} orders of run {run_id}"),
            },
        )
        .await
    }

    async fn put_events(&self, events: &[OrderEvent]) -> Result<(), StoreError> {
        let requests: Vec<WriteRequest> = (self.event_items(events)?.into_iter())
            .map(|item| {
                let put = PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .expect("a put request with its item");
                WriteRequest::builder().put_request(put).build()
            })
            .collect();
        for batch in requests.chunks(MAX_BATCH_WRITE_ITEMS) {
            self.write_batch(batch.to_vec()).await?;
        }
        Ok(())
    }

    async fn trace_events(&self, trace_id: &TraceId) -> Result<Vec<OrderEvent>, StoreError> {
        self.query_all(
            &self.events_table,
            EVENTS_PARTITION,
            &trace_id.to_string(),
            &format!("the events of trace {trace_id}"),
        )
        .await
    }

    async fn acquire_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<AcquireOutcome, StoreError> {
        // One call decides: the owner and lease are set only where there are none (a free
        // lock), and the wake-up is counted either way; the item as it was says which
        // happened.
        self.count_lock_update();
        let counted = self
            .client
            .update_item()
            .table_name(&self.locks_table)
            .key(LOCKS_PARTITION, lock_pk(run_id))
            .update_expression(
                "SET #owner = if_not_exists(#owner, :owner), \
                 lease_until = if_not_exists(lease_until, :lease) ADD marks :one",
            )
            .condition_expression("attribute_not_exists(#status) OR #status <> :completed")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":lease", number(lease_until_ms))
            .expression_attribute_values(":one", number(1))
            .expression_attribute_values(":completed", s(LockStatus::Completed.as_str()))
            .return_values(ReturnValue::AllOld)
            .send()
            .await;
        let before = match counted {
            Ok(answer) => answer.attributes.unwrap_or_default(),
            Err(e) if is_condition_failure(&e) => return Ok(AcquireOutcome::Completed),
            Err(e) => return Err(backend(format!("acquiring lock:{run_id}"), e)),
        };
        let marks = lock_marks(&before) + 1;
        match read_lock(run_id, &before)? {
            LockRead::Completed => Ok(AcquireOutcome::Completed),
            // It had no owner: this call took it.
            LockRead::Free if !before.contains_key("owner") => Ok(AcquireOutcome::Acquired {
                missed: false,
                marks,
            }),
            // The SDK's retry of a call whose answer was lost, which may have been a
            // takeover: results may be unread.
            LockRead::HeldBy(holder, _) if holder == owner => Ok(AcquireOutcome::Acquired {
                missed: true,
                marks,
            }),
            LockRead::HeldBy(_, lease_until) if lease_until >= now_ms => Ok(AcquireOutcome::Marked),
            LockRead::HeldBy(..) | LockRead::Free => {
                self.take_over_lock(run_id, owner, lease_until_ms, &before)
                    .await
            }
        }
    }

    async fn take_lock_with(
        &self,
        run_id: &RunId,
        owner: &str,
        released_marks: u64,
        lease_until_ms: u64,
        writes: &StepWrites,
    ) -> Result<u64, StoreError> {
        // Every acquire counts one: a lock never made (no item at all) is one never taken.
        let take = Update::builder()
            .table_name(&self.locks_table)
            .key(LOCKS_PARTITION, lock_pk(run_id))
            .update_expression("SET #owner = :owner, lease_until = :lease ADD marks :one")
            .expression_attribute_names("#owner", "owner")
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":lease", number(lease_until_ms))
            .expression_attribute_values(":one", number(1));
        let take = if released_marks == 0 {
            take.condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", LOCKS_PARTITION)
        } else {
            take.condition_expression(
                "attribute_not_exists(#owner) AND attribute_not_exists(#status) AND marks = :seen",
            )
            .expression_attribute_names("#status", "status")
            .expression_attribute_values(":seen", number(released_marks))
        };
        let take = take.build().map_err(|e| StoreError::Backend {
            what: format!("lock:{run_id}"),
            message: format!("building its taking: {e}"),
        })?;
        let step = self.step_items(run_id, writes)?;
        let mut items = vec![TransactWriteItem::builder().update(take).build()];
        items.extend(step.items);
        let refused = format!(
            "taking it with {} rows and {} orders' moves: it was not released with \
             {released_marks} wake-ups (0: never made), an order was not in the status \
             expected, or a row to insert exists",
            writes.inserts.len(),
            writes.moves.len()
        );
        self.transact(
            items,
            billed(writes, &step.rows, &step.events).chain([Written::Lock]),
            Transaction {
                what: format!("lock:{run_id}"),
                refused,
                doing: format!("taking lock:{run_id} with a step's writes"),
            },
        )
        .await?;
        Ok(released_marks + 1)
    }

    async fn renew_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        lease_until_ms: u64,
    ) -> Result<u64, StoreError> {
        let lease = AttributeValue::N(lease_until_ms.to_string());
        // A lease its holder ended (gave the lock back) stays ended: a renewal sent before
        // must not revive it.
        self.update_held_lock(
            run_id,
            owner,
            "SET lease_until = :lease",
            " AND lease_until > :ended",
            &[
                (":lease", lease),
                (":ended", AttributeValue::N("0".to_owned())),
            ],
            "renewing a lock",
        )
        .await
        .map(|item| lock_marks(&item))
    }

    async fn release_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        seen_marks: u64,
        writes: &StepWrites,
    ) -> Result<ReleaseOutcome, StoreError> {
        let release = self.release_update(run_id, owner, seen_marks)?;
        let lock_now = if writes.is_empty() {
            self.count_lock_update();
            match self.alone(release).send().await {
                Ok(_) => return Ok(ReleaseOutcome::Released),
                Err(e) => match failed_condition_item(&e) {
                    Some(now) => now,
                    None => return Err(backend(format!("releasing lock:{run_id}"), e)),
                },
            }
        } else {
            let step = self.step_items(run_id, writes)?;
            let mut items = vec![TransactWriteItem::builder().update(release).build()];
            items.extend(step.items);
            let billed = billed(writes, &step.rows, &step.events).chain([Written::Lock]);
            self.capacity.write(&self.calls, true, billed);
            self.calls.count(SERVICE, "TransactWriteItems");
            let written = self
                .client
                .transact_write_items()
                .set_transact_items(Some(items))
                .send()
                .await;
            let e = match written {
                Ok(_) => return Ok(ReleaseOutcome::Released),
                Err(e) => e,
            };
            let reasons = match e.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    cancelled.cancellation_reasons().to_vec()
                }
                _ => return Err(backend(format!("releasing lock:{run_id}"), e)),
            };
            match reasons.first() {
                // The release's own condition failed: the item says why.
                Some(lock) if lock.code() == Some("ConditionalCheckFailed") => {
                    lock.item().cloned().unwrap_or_default()
                }
                // Another item's condition (an order moved by someone else), or a conflict.
                _ => {
                    return Err(StoreError::ConditionFailed {
                        what: format!("lock:{run_id}"),
                        detail: format!(
                            "releasing a lock with the step's writes: {}",
                            DisplayErrorContext(&e)
                        ),
                    });
                }
            }
        };
        match read_lock(run_id, &lock_now)? {
            LockRead::HeldBy(holder, _) if holder == owner => Ok(ReleaseOutcome::Marked {
                marks: lock_marks(&lock_now),
            }),
            _ => Err(StoreError::ConditionFailed {
                what: format!("lock:{run_id}"),
                detail: format!("releasing a lock: not held by {owner}"),
            }),
        }
    }

    async fn complete_lock(&self, run_id: &RunId, owner: &str) -> Result<(), StoreError> {
        self.update_held_lock(
            run_id,
            owner,
            "SET #status = :completed",
            "",
            &[(":completed", s(LockStatus::Completed.as_str()))],
            "completing a lock",
        )
        .await
        .map(drop)
    }

    async fn lock_state(&self, run_id: &RunId) -> Result<Option<LockState>, StoreError> {
        let Some(item) = self.lock_item(run_id).await? else {
            return Ok(None);
        };
        let status = match read_lock(run_id, &item)? {
            LockRead::Completed => LockStatus::Completed,
            LockRead::HeldBy(..) => LockStatus::Held,
            LockRead::Free => LockStatus::Released,
        };
        Ok(Some(LockState {
            owner: text(&item, "owner"),
            status,
            lease_until_ms: lock_lease(&item),
            marks: lock_marks(&item),
        }))
    }
}

/// A step's writes as one transaction's items, and the rows and events among them, whose
/// sizes they are billed by.
struct StepItems {
    items: Vec<TransactWriteItem>,
    rows: Vec<Item>,
    events: Vec<Item>,
}

/// What a step's `writes` are billed as: a put per row inserted, an update per move, a put
/// per event (`rows` and `events`, the items put).
fn billed<'a>(
    writes: &'a StepWrites,
    rows: &'a [Item],
    events: &'a [Item],
) -> impl Iterator<Item = Written<'a>> {
    (rows.iter().map(Written::Item))
        .chain(writes.moves.iter().map(|_| Written::OrderRow))
        .chain(events.iter().map(Written::Event))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event row exactly as the hand-written conversion before serde_dynamo stored it
    /// (numbers as `N`, a nested null as `NULL`, an empty list as `L`), plus the table's
    /// own attributes: rows of a deployed table must still read.
    #[test]
    fn rows_written_before_serde_dynamo_still_read() {
        let run_id = RunId::generate();
        let n = |text: &str| AttributeValue::N(text.to_owned());
        let detail = AttributeValue::M(HashMap::from([
            ("attempt".to_owned(), s("a1")),
            ("big".to_owned(), n("18446744073709551615")),
            ("negative".to_owned(), n("-3")),
            ("half".to_owned(), n("0.5")),
            ("none".to_owned(), AttributeValue::Null(true)),
            ("empty".to_owned(), AttributeValue::L(Vec::new())),
            ("flag".to_owned(), AttributeValue::Bool(true)),
        ]));
        let item: Item = HashMap::from([
            ("trace_id".to_owned(), s("0a1b2c3d")),
            ("order_name".to_owned(), s("build")),
            ("epoch_ms".to_owned(), n("1700000000000")),
            ("event".to_owned(), s("dispatched")),
            ("run_id".to_owned(), s(run_id.as_str())),
            ("detail".to_owned(), detail),
            (EVENTS_SORT.to_owned(), s("build:1700000000000:dispatched")),
            (TTL_ATTRIBUTE.to_owned(), n("1800000000")),
        ]);
        let event: OrderEvent = parse("an old event", &item).unwrap();
        assert_eq!(event.run_id, run_id);
        assert_eq!(event.epoch_ms, 1_700_000_000_000);
        assert_eq!(
            event.detail,
            serde_json::json!({"attempt": "a1", "big": 18446744073709551615u64, "negative": -3,
                "half": 0.5, "none": null, "empty": [], "flag": true})
        );
        // And written back, it has the same attributes (absent values left out).
        let again = to_item(|| "the event".to_owned(), &event).unwrap();
        assert_eq!(again.get("detail"), item.get("detail"));
        assert_eq!(again.get("epoch_ms"), item.get("epoch_ms"));
    }
}
