//! [`SqliteStore`]: the orders, order_events and locks tables in SQLite.
//!
//! Same rows as DynamoDB: orders keyed by `<run_id>:<order_num>` with an index on
//! (`run_id`, `order_num`), events keyed by (`trace_id`, `<order_name>:<epoch_ms>:<event>`)
//! with an index on (`order_name`, `epoch`), locks keyed by `lock:<run_id>`; TTLs as
//! `expires_at` columns. Each conditional write reads and writes inside one
//! `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock first: the condition holds
//! against every other writer, in this process or another one sharing the file.
//!
//! rusqlite is blocking: every call runs on the blocking pool ([`crate::blocking`]), over one
//! connection behind a mutex (SQLite serialises writers anyway).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sluice_contract::{OrderNum, OrderStatus, RunId, TraceId};

use crate::blocking::run_blocking;
use crate::engine::millis;
use crate::error::StoreError;
use crate::ports::order_pk;
use crate::ports::{
    AcquireOutcome, LockState, LockStatus, OrderEvent, OrderRecord, OrderStore, ReleaseOutcome,
    StepWrites, Transition,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS orders (
    pk TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    order_num TEXT NOT NULL,
    status TEXT NOT NULL,
    record TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_by_run ON orders (run_id, order_num);
CREATE TABLE IF NOT EXISTS order_events (
    trace_id TEXT NOT NULL,
    sk TEXT NOT NULL,
    order_name TEXT NOT NULL,
    epoch INTEGER NOT NULL,
    event TEXT NOT NULL,
    run_id TEXT NOT NULL,
    detail TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (trace_id, sk)
);
CREATE INDEX IF NOT EXISTS events_by_order_name ON order_events (order_name, epoch);
CREATE TABLE IF NOT EXISTS locks (
    pk TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    status TEXT NOT NULL,
    lease_until INTEGER NOT NULL,
    -- the lock's wake-up count (named when it was a flag; a flag's 0 or 1 reads as a count)
    dirty INTEGER NOT NULL
);
";

/// The three tables in one SQLite file (see the module docs).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// Taken before a blocking thread is: callers wait for the connection as tasks, so
    /// only one thread of the (bounded) blocking pool ever holds or waits for it.
    conn: Arc<tokio::sync::Mutex<Connection>>,
    order_ttl_ms: u64,
    event_ttl_ms: u64,
}

fn backend(what: &str, error: rusqlite::Error) -> StoreError {
    StoreError::Backend {
        what: what.to_owned(),
        message: error.to_string(),
    }
}

/// Runs `sql` with `params`, prepared once per connection (SQLite's statement cache):
/// the same few statements run for every order of a run.
fn execute(conn: &Connection, sql: &str, params: impl rusqlite::Params) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute(params)
}

/// The one row `sql` answers with `params`, mapped by `f`, prepared as [`execute`]'s.
fn query_row<T>(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
    f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    conn.prepare_cached(sql)?.query_row(params, f)
}

fn lock_pk(run_id: &RunId) -> String {
    format!("lock:{run_id}")
}

impl SqliteStore {
    /// Opens (creating) the database at `path`, with rows kept for the given TTLs.
    ///
    /// # Errors
    ///
    /// [`StoreError::Backend`] when the file cannot be opened or the schema created.
    pub fn open(path: &Path, order_ttl: Duration, event_ttl: Duration) -> Result<Self, StoreError> {
        let what = format!("opening {}", path.display());
        let conn = Connection::open(path).map_err(|e| backend(&what, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| backend(&what, e))?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(|e| backend(&what, e))?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(|e| backend(&what, e))?;
        conn.execute_batch(SCHEMA).map_err(|e| backend(&what, e))?;
        // Room for every statement this store runs (about 20), each prepared once.
        conn.set_prepared_statement_cache_capacity(32);
        Ok(SqliteStore {
            conn: Arc::new(tokio::sync::Mutex::new(conn)),
            order_ttl_ms: millis(order_ttl),
            event_ttl_ms: millis(event_ttl),
        })
    }

    /// Runs that have rows and are not finalized (their lock is not `completed`), for a
    /// local resume after the process running them died.
    pub async fn unfinished_runs(&self) -> Result<Vec<RunId>, StoreError> {
        self.with_conn("listing unfinished runs", move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT DISTINCT run_id FROM orders WHERE 'lock:' || run_id NOT IN
                     (SELECT pk FROM locks WHERE status = 'completed') ORDER BY run_id",
                )
                .map_err(|e| backend("listing unfinished runs", e))?;
            let rows = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(|e| backend("listing unfinished runs", e))?;
            let mut runs = Vec::new();
            for row in rows {
                let text = row.map_err(|e| backend("listing unfinished runs", e))?;
                runs.extend(RunId::parse(&text));
            }
            Ok(runs)
        })
        .await
    }

    /// Frees a run's lock whoever holds it, unless the run is finalized: for a local resume,
    /// once the process that held it is known to be dead.
    pub async fn free_lock(&self, run_id: &RunId) -> Result<(), StoreError> {
        let pk = lock_pk(run_id);
        self.with_conn("freeing a lock", move |conn| {
            execute(
                conn,
                "UPDATE locks SET status = 'released' WHERE pk = ?1 AND status = 'held'",
                params![pk],
            )
            .map_err(|e| backend("freeing a lock", e))?;
            Ok(())
        })
        .await
    }

    fn ttls(&self) -> Ttls {
        Ttls {
            orders_ms: self.order_ttl_ms,
            events_ms: self.event_ttl_ms,
        }
    }

    /// Runs `work` with the connection on the blocking pool.
    async fn with_conn<T, F>(&self, what: &'static str, work: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let mut conn = Arc::clone(&self.conn).lock_owned().await;
        run_blocking(what, move || work(&mut conn)).await
    }
}

fn decode_record(text: &str) -> Result<OrderRecord, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend {
        what: "reading an orders row".to_owned(),
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("rows serialize")
}

#[async_trait]
impl OrderStore for SqliteStore {
    async fn insert_orders(
        &self,
        orders: &[OrderRecord],
        events: &[OrderEvent],
    ) -> Result<(), StoreError> {
        let orders = orders.to_vec();
        let events = events.to_vec();
        let ttls = self.ttls();
        self.with_conn("inserting orders", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend("inserting orders", e))?;
            for order in &orders {
                insert_row(&tx, order, ttls.orders_ms)?;
            }
            insert_events(&tx, &events, ttls.events_ms)?;
            tx.commit().map_err(|e| backend("inserting orders", e))
        })
        .await
    }

    async fn run_orders(&self, run_id: &RunId) -> Result<Vec<OrderRecord>, StoreError> {
        let run_id = run_id.to_string();
        self.with_conn("querying a run's orders", move |conn| {
            let mut statement = conn
                .prepare_cached("SELECT record FROM orders WHERE run_id = ?1 ORDER BY order_num")
                .map_err(|e| backend("querying orders", e))?;
            let rows = statement
                .query_map(params![run_id], |row| row.get::<_, String>(0))
                .map_err(|e| backend("querying orders", e))?;
            rows.map(|row| decode_record(&row.map_err(|e| backend("querying orders", e))?))
                .collect()
        })
        .await
    }

    async fn get_order(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
    ) -> Result<OrderRecord, StoreError> {
        let pk = order_pk(run_id, order_num);
        self.with_conn("reading an order", move |conn| {
            read_record(conn, &pk, "reading an order")
        })
        .await
    }

    async fn transition(
        &self,
        run_id: &RunId,
        order_num: OrderNum,
        from: OrderStatus,
        change: &Transition,
    ) -> Result<OrderRecord, StoreError> {
        change.check_allowed(run_id, order_num, from)?;
        let pk = order_pk(run_id, order_num);
        let change = change.clone();
        self.with_conn("changing an order's status", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend("changing an order's status", e))?;
            let record = move_in(&tx, &pk, from, &change)?;
            tx.commit()
                .map_err(|e| backend("changing an order's status", e))?;
            Ok(record)
        })
        .await
    }

    async fn transition_together(
        &self,
        run_id: &RunId,
        writes: &StepWrites,
    ) -> Result<(), StoreError> {
        writes.check_allowed(run_id)?;
        let run_id = run_id.clone();
        let writes = writes.clone();
        let ttls = self.ttls();
        self.with_conn("changing orders' statuses", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend("changing orders' statuses", e))?;
            write_step(&tx, &run_id, &writes, ttls)?;
            tx.commit()
                .map_err(|e| backend("changing orders' statuses", e))
        })
        .await
    }

    async fn put_events(&self, events: &[OrderEvent]) -> Result<(), StoreError> {
        let events = events.to_vec();
        let ttl = self.event_ttl_ms;
        self.with_conn("recording events", move |conn| {
            let tx = conn
                .transaction()
                .map_err(|e| backend("recording events", e))?;
            insert_events(&tx, &events, ttl)?;
            tx.commit().map_err(|e| backend("recording events", e))?;
            Ok(())
        })
        .await
    }

    async fn trace_events(&self, trace_id: &TraceId) -> Result<Vec<OrderEvent>, StoreError> {
        let trace = trace_id.clone();
        self.with_conn("reading events", move |conn| {
            let mut statement = conn
                .prepare_cached(
                    "SELECT order_name, epoch, event, run_id, detail FROM order_events
                     WHERE trace_id = ?1 ORDER BY sk",
                )
                .map_err(|e| backend("reading events", e))?;
            let rows = statement
                .query_map(params![trace.as_str()], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, i64>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                })
                .map_err(|e| backend("reading events", e))?;
            let mut events = Vec::new();
            for row in rows {
                let (order_name, epoch, event, raw_run_id, detail) =
                    row.map_err(|e| backend("reading events", e))?;
                let run_id = RunId::parse(&raw_run_id).ok_or_else(|| StoreError::Backend {
                    what: "reading events".to_owned(),
                    message: format!("bad run id {raw_run_id:?}"),
                })?;
                events.push(OrderEvent {
                    trace_id: trace.clone(),
                    order_name,
                    epoch_ms: epoch as u64,
                    event,
                    run_id,
                    detail: serde_json::from_str(&detail).unwrap_or(serde_json::Value::Null),
                });
            }
            Ok(events)
        })
        .await
    }

    async fn acquire_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        now_ms: u64,
        lease_until_ms: u64,
    ) -> Result<AcquireOutcome, StoreError> {
        let pk = lock_pk(run_id);
        let owner = owner.to_owned();
        self.with_conn("acquiring a lock", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend("acquiring a lock", e))?;
            let current: Option<(LockStatus, i64, String, i64)> = query_row(
                &tx,
                    "SELECT status, lease_until, owner, dirty FROM locks WHERE pk = ?1",
                    params![pk],
                    |row| Ok((lock_status(row, 0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
                )
                .optional()
                .map_err(|e| backend("acquiring a lock", e))?;
            let marks = current.as_ref().map_or(0, |c| c.3 as u64) + 1;
            let missed = match &current {
                None => false,
                Some((LockStatus::Completed, ..)) => return Ok(AcquireOutcome::Completed),
                Some((LockStatus::Released, ..)) => false,
                // Taken over: expired, or the caller's own hold (an acquire tried again).
                Some((_, lease_until, held_by, _))
                    if (*lease_until as u64) < now_ms || *held_by == owner =>
                {
                    true
                }
                Some(_) => {
                    execute(&tx,
                        "UPDATE locks SET dirty = ?2 WHERE pk = ?1",
                        params![pk, marks as i64],
                    )
                    .map_err(|e| backend("counting a wake-up on a lock", e))?;
                    tx.commit()
                        .map_err(|e| backend("counting a wake-up on a lock", e))?;
                    return Ok(AcquireOutcome::Marked);
                }
            };
            execute(&tx,
                "INSERT INTO locks (pk, owner, status, lease_until, dirty) VALUES (?1, ?2, 'held', ?3, ?4)
                 ON CONFLICT (pk) DO UPDATE SET owner = ?2, status = 'held', lease_until = ?3, dirty = ?4",
                params![pk, owner, lease_until_ms as i64, marks as i64],
            )
            .map_err(|e| backend("acquiring a lock", e))?;
            tx.commit().map_err(|e| backend("acquiring a lock", e))?;
            Ok(AcquireOutcome::Acquired { missed, marks })
        })
        .await
    }

    async fn take_lock_with(
        &self,
        run_id: &RunId,
        owner: &str,
        released_marks: u64,
        lease_until_ms: u64,
        writes: &StepWrites,
    ) -> Result<u64, StoreError> {
        writes.check_allowed(run_id)?;
        let pk = lock_pk(run_id);
        let owner = owner.to_owned();
        let run_id = run_id.clone();
        let writes = writes.clone();
        let ttls = self.ttls();
        self.with_conn("taking a lock with a step's writes", move |conn| {
            let what = "taking a lock with a step's writes";
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend(what, e))?;
            let current: Option<(LockStatus, i64)> = query_row(
                &tx,
                "SELECT status, dirty FROM locks WHERE pk = ?1",
                params![pk],
                |row| Ok((lock_status(row, 0)?, row.get(1)?)),
            )
            .optional()
            .map_err(|e| backend(what, e))?;
            match current {
                Some((LockStatus::Released, marks)) if marks as u64 == released_marks => {}
                // Never made: never taken.
                None if released_marks == 0 => {}
                other => {
                    return Err(StoreError::ConditionFailed {
                        what: pk,
                        detail: format!(
                            "{what}: not released with {released_marks} wake-ups ({other:?})"
                        ),
                    });
                }
            }
            write_step(&tx, &run_id, &writes, ttls)?;
            let marks = released_marks + 1;
            execute(
                &tx,
                "INSERT INTO locks (pk, owner, status, lease_until, dirty) \
                 VALUES (?1, ?2, 'held', ?3, ?4) ON CONFLICT (pk) DO UPDATE SET \
                 owner = ?2, status = 'held', lease_until = ?3, dirty = ?4",
                params![pk, owner, lease_until_ms as i64, marks as i64],
            )
            .map_err(|e| backend(what, e))?;
            tx.commit().map_err(|e| backend(what, e))?;
            Ok(marks)
        })
        .await
    }

    async fn renew_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        lease_until_ms: u64,
    ) -> Result<u64, StoreError> {
        let pk = lock_pk(run_id);
        let owner = owner.to_owned();
        self.with_conn("renewing a lock", move |conn| {
            let marks: Option<i64> = query_row(
                conn,
                "UPDATE locks SET lease_until = ?3
                 WHERE pk = ?1 AND owner = ?2 AND status = 'held' AND lease_until > 0
                 RETURNING dirty",
                params![pk, owner, lease_until_ms as i64],
                |row| row.get(0),
            )
            .optional()
            .map_err(|e| backend("renewing a lock", e))?;
            marks
                .map(|m| m as u64)
                .ok_or_else(|| StoreError::ConditionFailed {
                    what: pk,
                    detail: format!("renewing a lock: not held by {owner}"),
                })
        })
        .await
    }

    async fn release_lock(
        &self,
        run_id: &RunId,
        owner: &str,
        seen_marks: u64,
        writes: &StepWrites,
    ) -> Result<ReleaseOutcome, StoreError> {
        writes.check_allowed(run_id)?;
        let pk = lock_pk(run_id);
        let owner = owner.to_owned();
        let run_id = run_id.clone();
        let writes = writes.clone();
        let ttls = self.ttls();
        self.with_conn("releasing a lock", move |conn| {
            let tx = conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(|e| backend("releasing a lock", e))?;
            let current: Option<(LockStatus, String, i64)> = query_row(
                &tx,
                "SELECT status, owner, dirty FROM locks WHERE pk = ?1",
                params![pk],
                |row| Ok((lock_status(row, 0)?, row.get(1)?, row.get(2)?)),
            )
            .optional()
            .map_err(|e| backend("releasing a lock", e))?;
            match current {
                Some((LockStatus::Held, held_by, marks)) if held_by == owner => {
                    if marks as u64 != seen_marks {
                        return Ok(ReleaseOutcome::Marked {
                            marks: marks as u64,
                        });
                    }
                    write_step(&tx, &run_id, &writes, ttls)?;
                    execute(
                        &tx,
                        "UPDATE locks SET status = 'released' WHERE pk = ?1",
                        params![pk],
                    )
                    .map_err(|e| backend("releasing a lock", e))?;
                    tx.commit().map_err(|e| backend("releasing a lock", e))?;
                    Ok(ReleaseOutcome::Released)
                }
                _ => Err(StoreError::ConditionFailed {
                    what: pk,
                    detail: format!("releasing a lock: not held by {owner}"),
                }),
            }
        })
        .await
    }

    async fn complete_lock(&self, run_id: &RunId, owner: &str) -> Result<(), StoreError> {
        conditional_lock_update(
            self,
            run_id,
            owner,
            "UPDATE locks SET status = 'completed' WHERE pk = ?1 AND owner = ?2 AND status = 'held'",
            "completing a lock",
        )
        .await
    }

    async fn lock_state(&self, run_id: &RunId) -> Result<Option<LockState>, StoreError> {
        let pk = lock_pk(run_id);
        self.with_conn("reading a lock", move |conn| {
            query_row(
                conn,
                "SELECT owner, status, lease_until, dirty FROM locks WHERE pk = ?1",
                params![pk],
                |row| {
                    Ok(LockState {
                        owner: row.get(0)?,
                        status: lock_status(row, 1)?,
                        lease_until_ms: row.get::<_, i64>(2)? as u64,
                        marks: row.get::<_, i64>(3)? as u64,
                    })
                },
            )
            .optional()
            .map_err(|e| backend("reading a lock", e))
        })
        .await
    }
}

/// How long rows are kept past their job's deadline, and events past their time, ms.
#[derive(Debug, Clone, Copy)]
struct Ttls {
    orders_ms: u64,
    events_ms: u64,
}

/// Makes a step's `writes` of `run_id` inside `tx` (which the caller commits, or drops to
/// undo): its rows inserted, its moves (checked allowed by the caller, before it opened
/// `tx`), its events.
fn write_step(
    tx: &rusqlite::Transaction<'_>,
    run_id: &RunId,
    writes: &StepWrites,
    ttls: Ttls,
) -> Result<(), StoreError> {
    for order in &writes.inserts {
        insert_row(tx, order, ttls.orders_ms)?;
    }
    for m in &writes.moves {
        move_in(tx, &order_pk(run_id, m.order_num), m.from, &m.change)?;
    }
    insert_events(tx, &writes.events, ttls.events_ms)
}

/// Inserts `order`'s row inside `tx` where none with its key exists, kept `ttl_ms` past its
/// job's deadline (a run may last as long as its job_timeout).
fn insert_row(
    tx: &rusqlite::Transaction<'_>,
    order: &OrderRecord,
    ttl_ms: u64,
) -> Result<(), StoreError> {
    let inserted = execute(
        tx,
        "INSERT OR IGNORE INTO orders (pk, run_id, order_num, status, record, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            order.pk(),
            order.run_id.as_str(),
            order.plan.order_num.to_string(),
            order.status.as_str(),
            encode(order),
            (order.job_deadline_ms + ttl_ms) as i64
        ],
    )
    .map_err(|e| backend("inserting orders", e))?;
    if inserted == 0 {
        return Err(StoreError::ConditionFailed {
            what: format!("orders row {}", order.pk()),
            detail: "it exists already".to_owned(),
        });
    }
    Ok(())
}

/// Records `events` inside `tx`, each replacing one with the same key, kept `ttl_ms`.
fn insert_events(
    tx: &rusqlite::Transaction<'_>,
    events: &[OrderEvent],
    ttl_ms: u64,
) -> Result<(), StoreError> {
    for event in events {
        execute(
            tx,
            "INSERT OR REPLACE INTO order_events
             (trace_id, sk, order_name, epoch, event, run_id, detail, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                event.trace_id.as_str(),
                event.sk(),
                event.order_name,
                event.epoch_ms as i64,
                event.event,
                event.run_id.as_str(),
                event.detail.to_string(),
                event.epoch_ms.saturating_add(ttl_ms).min(i64::MAX as u64) as i64
            ],
        )
        .map_err(|e| backend("recording an event", e))?;
    }
    Ok(())
}

/// The orders row `pk`, decoded (`what` names the caller's operation in errors).
fn read_record(conn: &Connection, pk: &str, what: &str) -> Result<OrderRecord, StoreError> {
    let text: Option<String> = query_row(
        conn,
        "SELECT record FROM orders WHERE pk = ?1",
        params![pk],
        |row| row.get(0),
    )
    .optional()
    .map_err(|e| backend(what, e))?;
    match text {
        Some(text) => decode_record(&text),
        None => Err(StoreError::NotFound {
            key: format!("orders row {pk}"),
        }),
    }
}

/// Moves the order row `pk` from `from` with `change` inside `tx` (which the caller
/// commits, or drops to undo); returns the new row.
fn move_in(
    tx: &rusqlite::Transaction<'_>,
    pk: &str,
    from: OrderStatus,
    change: &Transition,
) -> Result<OrderRecord, StoreError> {
    let mut record = read_record(tx, pk, "changing an order's status")?;
    if record.status != from {
        return Err(StoreError::ConditionFailed {
            what: format!("orders row {pk}"),
            detail: format!("status is {}, not {from}", record.status),
        });
    }
    change.apply(&mut record);
    execute(
        tx,
        "UPDATE orders SET status = ?2, record = ?3 WHERE pk = ?1",
        params![pk, record.status.as_str(), encode(&record)],
    )
    .map_err(|e| backend("changing an order's status", e))?;
    Ok(record)
}

/// Runs one conditional UPDATE on a lock row (`?1` pk, `?2` owner);
/// no row changed means the condition failed.
async fn conditional_lock_update(
    store: &SqliteStore,
    run_id: &RunId,
    owner: &str,
    sql: &'static str,
    what: &'static str,
) -> Result<(), StoreError> {
    let pk = lock_pk(run_id);
    let owner = owner.to_owned();
    store
        .with_conn(what, move |conn| {
            let changed = execute(conn, sql, params![pk, owner]).map_err(|e| backend(what, e))?;
            if changed == 1 {
                Ok(())
            } else {
                Err(StoreError::ConditionFailed {
                    what: pk,
                    detail: format!("{what}: not held by {owner}"),
                })
            }
        })
        .await
}

/// Column `index` of `row`: a lock's status, as the enum the column stores.
fn lock_status(row: &rusqlite::Row<'_>, index: usize) -> rusqlite::Result<LockStatus> {
    let text: String = row.get(index)?;
    LockStatus::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            index,
            rusqlite::types::Type::Text,
            format!("unknown lock status {text:?}").into(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_ports::conformance::sample_order;

    /// A row lives for the retention after its job's deadline, not after init: a job may
    /// last 30 days, and its rows must outlive it (before, they expired a day after init).
    #[tokio::test]
    async fn order_rows_expire_the_retention_after_the_jobs_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let day = Duration::from_secs(86_400);
        let store = SqliteStore::open(&dir.path().join("db"), day, day).unwrap();
        let run = RunId::generate();
        let mut order = sample_order(&run, 0);
        order.job_deadline_ms = order.created_at_ms + 30 * 86_400_000;
        store
            .insert_orders(std::slice::from_ref(&order), &[])
            .await
            .unwrap();
        let pk = order.pk();
        let expires_at: i64 = store
            .with_conn("reading back", move |conn| {
                query_row(
                    conn,
                    "SELECT expires_at FROM orders WHERE pk = ?1",
                    params![pk],
                    |row| row.get(0),
                )
                .map_err(|e| backend("reading back", e))
            })
            .await
            .unwrap();
        assert_eq!(expires_at as u64, order.job_deadline_ms + 86_400_000);
    }
}
