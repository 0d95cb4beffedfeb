//! What a run report (`sluice report`) is drawn from, gathered over the ports so that a
//! local run and a run on AWS read the same way: the run's rows, its done document, its
//! events and, for each order, as much of its stored log as the report has room for.
//!
//! A report of a big run must stay small enough to open, so the orders' logs share a
//! budget, those that did not succeed first: each shown log is cut to its share, its head
//! read from the stored log (a ranged read, never the whole object) and its tail from the
//! order's result, which holds the log's last 256 KiB. When the shares are too small to
//! be worth reading, a log is only named. A log that cannot be read says why; the report
//! is still written.

use futures::StreamExt as _;
use sluice_contract::result::{DoneDoc, DoneOrder, MAX_RESULT_BYTES, parse_result};
use sluice_contract::{OrderNum, OrderStatus, RunId, TraceId};

use crate::error::{EngineError, StoreError};
use crate::ports::{OrderEvent, OrderRecord};
use crate::runs::RunStores;

/// Logs read at once.
const LOG_READS_AT_ONCE: usize = 16;

/// How much of the orders' logs a report holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogBudget {
    /// The most bytes of all the logs together.
    pub total_bytes: usize,
    /// The most bytes of one order's log, however few orders there are.
    pub per_order_max: usize,
    /// The fewest bytes of a log worth showing: below it, logs are only named.
    pub least_shown: usize,
}

impl Default for LogBudget {
    fn default() -> Self {
        LogBudget {
            total_bytes: 1024 * 1024,
            per_order_max: 64 * 1024,
            least_shown: 160,
        }
    }
}

impl LogBudget {
    /// The bytes shown of each log of `unwell` orders (those that ran and did not succeed)
    /// and of each of `well` orders' (that ran and succeeded): the unwell share three
    /// quarters of the budget first, the well what is left; a share below
    /// [`LogBudget::least_shown`] is 0, and so is the well's when the unwell's is.
    pub fn shares(&self, unwell: usize, well: usize) -> (usize, usize) {
        let share = |total: usize, orders: usize| match total.checked_div(orders) {
            Some(share) if share >= self.least_shown => share.min(self.per_order_max),
            _ => 0,
        };
        let unwell_share = share(self.total_bytes / 4 * 3, unwell);
        if unwell > 0 && unwell_share == 0 {
            return (0, 0);
        }
        let left = self.total_bytes.saturating_sub(unwell_share * unwell);
        (unwell_share, share(left, well))
    }
}

/// A run as its report shows it.
#[derive(Debug, Clone)]
pub struct RunReport {
    /// The run.
    pub run_id: RunId,
    /// Its done document, once finalized.
    pub done: Option<DoneDoc>,
    /// Its rows, in order (none once they expired: a day after the run on AWS).
    pub orders: Vec<OrderRecord>,
    /// Its events (the job's and its orders'), oldest first.
    pub events: Vec<OrderEvent>,
    /// What the report shows of each order's log, by order number.
    pub logs: Vec<(OrderNum, LogExcerpt)>,
    /// Why the events could not be read, when they could not.
    pub events_unread: Option<String>,
}

/// What a report shows of one order's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogExcerpt {
    /// Where the whole log is (an object URL: the log, or the result holding it).
    pub location: Option<String>,
    /// The log's size in bytes, when known.
    pub total_bytes: Option<u64>,
    /// Its beginning (empty when only its end is known, or nothing of it is shown).
    pub head: String,
    /// Its end, shown after a gap, when `head` is not all of it.
    pub tail: Option<String>,
    /// Whether bytes of the log are not shown (between `head` and `tail`, or after `head`).
    pub cut: bool,
    /// Why there is no log to show (it has not run; its worker stored none; it could not
    /// be read).
    pub missing: Option<String>,
}

/// Where an order's log may be read from: its row's, or its done document line's.
#[derive(Debug, Clone)]
struct LogSource<'a> {
    order_num: OrderNum,
    status: OrderStatus,
    /// Whether an attempt of it was dispatched.
    ran: bool,
    /// Where the log is stored (if it was: `stored` not false).
    log_key: Option<&'a str>,
    stored: bool,
    /// Where the result that ended it is.
    result_key: Option<String>,
}

impl<'a> LogSource<'a> {
    fn of_row(row: &'a OrderRecord) -> Self {
        LogSource {
            order_num: row.plan.order_num,
            status: row.status,
            ran: row.attempt.is_some(),
            log_key: Some(&row.log_key),
            stored: row.log_stored != Some(false),
            result_key: row.result_key(),
        }
    }

    fn of_done(order: &'a DoneOrder) -> Self {
        LogSource {
            order_num: order.order_num,
            status: order.status,
            ran: order.log_key.is_some() || order.result_key.is_some(),
            log_key: order.log_key.as_deref(),
            stored: order.log_key.is_some(),
            result_key: order.result_key.clone(),
        }
    }

    fn unwell(&self) -> bool {
        !matches!(self.status, OrderStatus::Succeeded | OrderStatus::Skipped)
    }
}

impl RunStores {
    /// What the report of `run_id` shows, the orders' logs cut to their shares of
    /// `budget`.
    ///
    /// # Errors
    ///
    /// [`EngineError::UnknownRun`] when the run has neither rows nor a done document; a
    /// backend failure reading them or the events (a log that cannot be read is said so
    /// in its excerpt).
    pub async fn run_report(
        &self,
        run_id: &RunId,
        budget: LogBudget,
    ) -> Result<RunReport, EngineError> {
        let view = self.view(run_id).await?;
        // The rows, else (expired) the done document, say where each log is.
        let sources: Vec<LogSource<'_>> = match (&view.orders[..], &view.done) {
            ([], Some(done)) => done.orders.iter().map(LogSource::of_done).collect(),
            (rows, _) => rows.iter().map(LogSource::of_row).collect(),
        };
        let trace = (view.orders.first().map(|row| row.trace_id.clone()))
            .or_else(|| view.done.as_ref().and_then(|d| TraceId::parse(&d.trace_id)));
        // A client may read the rows and logs but not the events table: the report says so.
        let (mut events, events_unread) = match trace {
            Some(trace) => match self.orders.trace_events(&trace).await {
                Ok(events) => (events, None),
                Err(error) => (Vec::new(), Some(error.to_string())),
            },
            None => (Vec::new(), None),
        };
        events.retain(|event| &event.run_id == run_id);
        events.sort_by(|a, b| (a.epoch_ms, &a.order_name).cmp(&(b.epoch_ms, &b.order_name)));
        let ran = sources.iter().filter(|source| source.ran);
        let unwell = ran.clone().filter(|source| source.unwell()).count();
        let well = ran.count() - unwell;
        let (unwell_share, well_share) = budget.shares(unwell, well);
        let logs = futures::stream::iter(&sources)
            .map(|source| async move {
                let share = if source.unwell() {
                    unwell_share
                } else {
                    well_share
                };
                (source.order_num, self.log_excerpt(source, share).await)
            })
            .buffered(LOG_READS_AT_ONCE)
            .collect()
            .await;
        Ok(RunReport {
            run_id: run_id.clone(),
            done: view.done,
            orders: view.orders,
            events,
            logs,
            events_unread,
        })
    }

    /// At most `max_bytes` of an order's log: all of it, or its head and its tail; with
    /// `max_bytes` 0, only where it is.
    async fn log_excerpt(&self, source: &LogSource<'_>, max_bytes: usize) -> LogExcerpt {
        if !source.ran {
            let missing = match source.status.is_terminal() {
                true => format!("it is {}: it did not run", source.status),
                false => format!("it is {}: its log is stored when it ends", source.status),
            };
            return LogExcerpt {
                missing: Some(missing),
                ..LogExcerpt::default()
            };
        }
        let where_from = match (source.stored, source.log_key, &source.result_key) {
            (true, Some(key), _) => Some(key.to_owned()),
            (_, _, result) => result.clone(),
        };
        if max_bytes == 0 {
            return LogExcerpt {
                location: where_from.map(|key| self.internal.object_url(&key)),
                cut: true,
                ..LogExcerpt::default()
            };
        }
        match self.read_excerpt(source, max_bytes).await {
            Ok(excerpt) => excerpt,
            Err(error) => LogExcerpt {
                location: where_from.map(|key| self.internal.object_url(&key)),
                missing: Some(format!("it could not be read: {error}")),
                ..LogExcerpt::default()
            },
        }
    }

    async fn read_excerpt(
        &self,
        source: &LogSource<'_>,
        max_bytes: usize,
    ) -> Result<LogExcerpt, StoreError> {
        let half = max_bytes / 2;
        let mut excerpt = LogExcerpt::default();
        if let (true, Some(key)) = (source.stored, source.log_key) {
            match self.internal.get_prefix(key, max_bytes as u64).await {
                Ok(log) => {
                    excerpt.location = Some(self.internal.object_url(key));
                    if log.len() <= max_bytes {
                        excerpt.total_bytes = Some(log.len() as u64);
                        excerpt.head = String::from_utf8_lossy(&log).into_owned();
                        return Ok(excerpt);
                    }
                    excerpt.cut = true;
                    excerpt.head = whole_characters(&log[..half]);
                }
                Err(StoreError::NotFound { .. }) => {}
                Err(other) => return Err(other),
            }
        }
        // The result holds the log's end: all of it when the log was not stored apart.
        let result = match &source.result_key {
            Some(key) => match self.internal.get_prefix(key, MAX_RESULT_BYTES as u64).await {
                Ok(bytes) => parse_result(&bytes).ok().map(|result| (key, result)),
                Err(StoreError::NotFound { .. }) => None,
                // The head read is shown; the rest is said not shown.
                Err(_) if !excerpt.head.is_empty() => None,
                Err(other) => return Err(other),
            },
            None => None,
        };
        let Some((key, result)) = result else {
            if excerpt.location.is_none() {
                excerpt.missing = Some(format!("it is {}: no log of it was stored", source.status));
            }
            return Ok(excerpt);
        };
        let log = result.log;
        excerpt.total_bytes = Some(result.log_bytes.max(log.len() as u64));
        let whole = excerpt.location.is_none() && (log.len() as u64) >= result.log_bytes;
        if excerpt.location.is_none() {
            excerpt.location = Some(self.internal.object_url(key));
        }
        if whole && log.len() <= max_bytes {
            excerpt.head = log;
        } else if whole {
            excerpt.cut = true;
            excerpt.head = log[..log.floor_char_boundary(half)].to_owned();
            excerpt.tail = Some(log[log.ceil_char_boundary(log.len() - half)..].to_owned());
        } else {
            // The stored log's head was read above; else only its end was kept.
            excerpt.cut = true;
            let keep = if excerpt.head.is_empty() {
                max_bytes
            } else {
                half
            };
            let from = log.ceil_char_boundary(log.len().saturating_sub(keep));
            excerpt.tail = Some(log[from..].to_owned());
        }
        Ok(excerpt)
    }
}

/// `bytes` as text, less a character cut at their end.
fn whole_characters(bytes: &[u8]) -> String {
    // Where the last character starts (at most 3 bytes back), if it is unfinished.
    let last_start = (bytes.len().saturating_sub(3)..bytes.len())
        .rev()
        .find(|&at| bytes[at] & 0xC0 != 0x80);
    let end = match last_start {
        Some(at) if std::str::from_utf8(&bytes[at..]).is_err_and(|e| e.error_len().is_none()) => at,
        _ => bytes.len(),
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

#[cfg(all(test, feature = "local"))]
mod tests {
    use std::sync::Arc;

    use sluice_contract::result::ResultDoc;
    use sluice_contract::{AttemptId, OrderStatus, keys};

    use super::*;
    use crate::local::{DirStore, SqliteStore};
    use crate::ports::ObjectStore;
    use crate::ports::conformance::sample_order;

    struct Fixture {
        dir: tempfile::TempDir,
        stores: RunStores,
        row: OrderRecord,
    }

    /// An ended order whose log (if any) is stored at its `log_key`, and its result.
    async fn ended_order(stored_log: Option<&[u8]>, result: Option<ResultDoc>) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let store = |name: &str| Arc::new(DirStore::open(&dir.path().join(name), name).unwrap());
        let internal = store("internal");
        let stores = RunStores {
            internal: Arc::clone(&internal) as Arc<dyn ObjectStore>,
            done: store("done"),
            orders: Arc::new(SqliteStore::open(&dir.path().join("db"), MINUTE, MINUTE).unwrap()),
        };
        let run = RunId::generate();
        let mut row = sample_order(&run, 0);
        row.status = OrderStatus::Failed;
        row.attempt = AttemptId::parse("a1");
        row.log_key = "tmp/logs/order.txt".to_owned();
        if let Some(log) = stored_log {
            internal.put(&row.log_key, log.to_vec()).await.unwrap();
        } else {
            row.log_stored = Some(false);
        }
        if let Some(result) = result {
            let key = keys::result(&run, row.plan.order_num, row.attempt.as_ref().unwrap());
            internal
                .put(&key, serde_json::to_vec(&result).unwrap())
                .await
                .unwrap();
        }
        Fixture { dir, stores, row }
    }

    const MINUTE: std::time::Duration = std::time::Duration::from_secs(60);

    /// A result keeping the last `kept` bytes of `log`.
    fn result_of(log: &str, kept: usize, in_result: bool) -> ResultDoc {
        let mut result = ResultDoc::new(OrderStatus::Failed, &log[log.len() - kept..]);
        result.log_bytes = log.len() as u64;
        result.log_in_result = in_result;
        result
    }

    #[tokio::test]
    async fn a_short_log_is_shown_whole() {
        let fixture = ended_order(Some(b"all of it\n"), None).await;
        let excerpt = fixture
            .stores
            .log_excerpt(&LogSource::of_row(&fixture.row), 100)
            .await;
        assert_eq!(excerpt.head, "all of it\n");
        assert_eq!((excerpt.tail, excerpt.cut), (None, false));
        assert_eq!(excerpt.total_bytes, Some(10));
        assert!(excerpt.location.unwrap().ends_with("tmp/logs/order.txt"));
    }

    #[tokio::test]
    async fn a_long_log_shows_its_head_and_the_tail_its_result_kept() {
        let log: String = (0..200).map(|i| format!("line {i:03}\n")).collect();
        let result = result_of(&log, 300, false);
        let fixture = ended_order(Some(log.as_bytes()), Some(result)).await;
        let excerpt = fixture
            .stores
            .log_excerpt(&LogSource::of_row(&fixture.row), 100)
            .await;
        assert_eq!(excerpt.head, log[..50]);
        assert_eq!(excerpt.tail.as_deref(), Some(&log[log.len() - 50..]));
        assert!(excerpt.cut);
        assert_eq!(excerpt.total_bytes, Some(log.len() as u64));
    }

    #[tokio::test]
    async fn a_log_only_its_result_holds_is_read_from_there() {
        let whole = "kept whole in the result\n";
        let fixture = ended_order(None, Some(result_of(whole, whole.len(), true))).await;
        let excerpt = fixture
            .stores
            .log_excerpt(&LogSource::of_row(&fixture.row), 100)
            .await;
        assert_eq!((excerpt.head.as_str(), excerpt.cut), (whole, false));
        assert!(excerpt.location.unwrap().contains("result"));

        // A result that kept only the end of a log that was not stored: the end, cut.
        let log = "x".repeat(500) + "the end\n";
        let fixture = ended_order(None, Some(result_of(&log, 200, false))).await;
        let excerpt = fixture
            .stores
            .log_excerpt(&LogSource::of_row(&fixture.row), 100)
            .await;
        assert_eq!(excerpt.head, "");
        assert_eq!(excerpt.tail.as_deref(), Some(&log[log.len() - 100..]));
        assert!(excerpt.cut);
    }

    #[tokio::test]
    async fn an_order_without_a_log_says_why() {
        let fixture = ended_order(None, None).await;
        let excerpt = fixture
            .stores
            .log_excerpt(&LogSource::of_row(&fixture.row), 100)
            .await;
        assert_eq!(
            excerpt.missing.as_deref(),
            Some("it is failed: no log of it was stored")
        );
    }

    #[tokio::test]
    async fn an_order_that_did_not_run_or_whose_share_is_nothing_is_not_read() {
        let mut fixture = ended_order(Some(b"a log\n"), None).await;
        let named = fixture
            .stores
            .log_excerpt(&LogSource::of_row(&fixture.row), 0)
            .await;
        assert!(named.cut && named.head.is_empty() && named.missing.is_none());
        assert!(named.location.unwrap().ends_with("tmp/logs/order.txt"));
        fixture.row.attempt = None;
        fixture.row.status = OrderStatus::Skipped;
        let skipped = fixture
            .stores
            .log_excerpt(&LogSource::of_row(&fixture.row), 100)
            .await;
        assert_eq!(
            skipped.missing.as_deref(),
            Some("it is skipped: it did not run")
        );
    }

    #[test]
    fn a_head_ends_with_whole_characters() {
        assert_eq!(whole_characters("abé".as_bytes()), "abé");
        assert_eq!(whole_characters(&"abé".as_bytes()[..3]), "ab");
        assert_eq!(whole_characters(&"a\u{1F600}".as_bytes()[..4]), "a");
        // An invalid byte earlier is shown as such; the cut character is still left out.
        assert_eq!(whole_characters(b"\xffx\xc3"), "\u{FFFD}x");
    }

    #[tokio::test]
    async fn a_run_whose_rows_expired_is_read_through_its_done_document() {
        let fixture = ended_order(Some(b"built\n"), None).await;
        let run = fixture.row.run_id.clone();
        let done = serde_json::json!({
            "status": "succeeded", "run_id": run, "trace_id": fixture.row.trace_id,
            "orders": [{"order_num": "0001", "order_name": "order-1", "status": "succeeded",
                        "log_key": fixture.row.log_key}]
        });
        let key = keys::done(&run);
        fixture
            .stores
            .done
            .put(&key, done.to_string().into_bytes())
            .await
            .unwrap();
        let event = OrderEvent {
            trace_id: fixture.row.trace_id.clone(),
            order_name: "order-1".to_owned(),
            epoch_ms: 5,
            event: "emitted:progress".to_owned(),
            run_id: run.clone(),
            detail: serde_json::json!({"message": "half way"}),
        };
        fixture.stores.orders.put_events(&[event]).await.unwrap();
        let report = fixture
            .stores
            .run_report(&run, LogBudget::default())
            .await
            .unwrap();
        assert!(report.orders.is_empty());
        assert_eq!(report.logs[0].1.head, "built\n");
        assert_eq!(report.events.len(), 1);
    }

    #[tokio::test]
    async fn events_that_cannot_be_read_are_said_so_and_the_rest_is_reported() {
        let fixture = ended_order(Some(b"built\n"), None).await;
        fixture
            .stores
            .orders
            .insert_orders(std::slice::from_ref(&fixture.row), &[])
            .await
            .unwrap();
        // A client allowed the rows but not the events table, as SQLite sees it.
        let db = rusqlite::Connection::open(fixture.dir.path().join("db")).unwrap();
        db.execute_batch("DROP TABLE order_events").unwrap();
        let run = &fixture.row.run_id;
        let report = fixture
            .stores
            .run_report(run, LogBudget::default())
            .await
            .unwrap();
        assert!(report.events_unread.unwrap().contains("order_events"));
        assert_eq!(report.logs[0].1.head, "built\n");
    }

    #[test]
    fn unsuccessful_orders_share_the_budget_first() {
        let budget = LogBudget::default();
        assert_eq!(budget.shares(1, 0), (64 * 1024, 0));
        assert_eq!(budget.shares(0, 100), (0, 1024 * 1024 / 100));
        assert_eq!(budget.shares(0, 6000), (0, 174));
        // 9 999 orders, 10 failed: the failures get all they may, the rest too little to
        // show.
        assert_eq!(budget.shares(10, 9989), (64 * 1024, 0));
        assert_eq!(budget.shares(0, 0), (0, 0));
        // A few failures leave the orders that succeeded a quarter at least.
        assert_eq!(budget.shares(17, 3), (1024 * 1024 * 3 / 4 / 17, 64 * 1024));
        // Too many failures to show each: none shown, not those that succeeded instead.
        assert_eq!(budget.shares(7000, 3000), (0, 0));
    }
}
