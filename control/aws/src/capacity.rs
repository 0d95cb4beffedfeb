//! What DynamoDB bills a request: item sizes and on-demand request units.
//!
//! DynamoDB bills on-demand tables by request unit, not by call: a write costs one write
//! request unit per started KB of the item (the larger of before and after), a strongly
//! consistent read one read request unit per started 4 KB read, and a transaction twice
//! that. moto answers `ConsumedCapacity` with fixed numbers, so the adapter works the units
//! out itself from the items it sends and receives, and adds them to its [`CallCounter`]
//! for the AWS benchmark to price. An update whose
//! answer holds no item (the moves of a transaction) is billed at the largest order row the
//! adapter has seen: a row changes little over an order's life. An event is written twice:
//! to its table and to the table's index (`by_order_name`, which projects every
//! attribute). Sizes follow DynamoDB's documented rules ("Item sizes and formats").

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::calls::CallCounter;

type Item = HashMap<String, AttributeValue>;

const SERVICE: &str = "dynamodb";
/// The unit names the counter records.
pub const WRITE_UNITS: &str = "write request units";
pub const READ_UNITS: &str = "read request units";
/// A write request unit covers this much of an item, a read request unit this much read.
const WRITE_UNIT_BYTES: usize = 1024;
const READ_UNIT_BYTES: usize = 4096;
/// A lock item (owner, lease, marks, status) is far below a write unit.
const LOCK_ITEM_UNITS: u64 = 1;

/// The size DynamoDB counts for `item`: its attribute names and values.
pub fn item_size(item: &Item) -> usize {
    item.iter()
        .map(|(name, value)| name.len() + value_size(value))
        .sum()
}

fn value_size(value: &AttributeValue) -> usize {
    match value {
        AttributeValue::S(text) => text.len(),
        AttributeValue::N(number) => number_size(number),
        AttributeValue::B(bytes) => bytes.as_ref().len(),
        AttributeValue::Ss(texts) => texts.iter().map(String::len).sum(),
        AttributeValue::Ns(numbers) => numbers.iter().map(|n| number_size(n)).sum(),
        AttributeValue::Bs(blobs) => blobs.iter().map(|b| b.as_ref().len()).sum(),
        // Three bytes for the list or map, one per element.
        AttributeValue::L(values) => 3 + values.iter().map(|v| 1 + value_size(v)).sum::<usize>(),
        AttributeValue::M(map) => {
            3 + map
                .iter()
                .map(|(name, v)| 1 + name.len() + value_size(v))
                .sum::<usize>()
        }
        // Null, a boolean, and any kind added later.
        _ => 1,
    }
}

/// A number: one byte per two significant digits, plus one.
fn number_size(number: &str) -> usize {
    let digits = number
        .trim_start_matches('-')
        .split(['e', 'E'])
        .next()
        .unwrap_or_default()
        .replace('.', "");
    let significant = digits.trim_start_matches('0').trim_end_matches('0').len();
    significant.div_ceil(2) + 1
}

/// Write request units of one item of `size` bytes (a transaction bills each twice).
fn write_units(size: usize) -> u64 {
    size.div_ceil(WRITE_UNIT_BYTES).max(1) as u64
}

/// Read request units of `size` bytes read by one strongly consistent request.
fn read_units(size: usize) -> u64 {
    size.div_ceil(READ_UNIT_BYTES).max(1) as u64
}

/// The units an adapter's calls cost, added to its call counter.
#[derive(Debug, Default)]
pub struct Capacity {
    /// The largest order row read or written so far, in bytes.
    largest_order_row: AtomicUsize,
}

/// One item of a write, as far as its bill goes.
#[derive(Debug)]
pub enum Written<'a> {
    /// An item sent whole (a put).
    Item(&'a Item),
    /// An event put: its item, and the same again in the events table's index.
    Event(&'a Item),
    /// An update of an order row the answer does not return.
    OrderRow,
    /// An update of a lock item.
    Lock,
}

impl Capacity {
    /// Notes `item`, an order row read or written, as a size updates of rows are billed at.
    pub fn saw_order_row(&self, item: &Item) {
        self.largest_order_row
            .fetch_max(item_size(item), Ordering::Relaxed);
    }

    fn units_of(&self, written: &Written<'_>) -> u64 {
        match written {
            Written::Item(item) => write_units(item_size(item)),
            Written::Event(item) => 2 * write_units(item_size(item)),
            Written::OrderRow => write_units(self.largest_order_row.load(Ordering::Relaxed)),
            Written::Lock => LOCK_ITEM_UNITS,
        }
    }

    /// Bills a write of `items`, each twice when they are written in a transaction.
    pub fn write<'a>(
        &self,
        calls: &CallCounter,
        transaction: bool,
        items: impl IntoIterator<Item = Written<'a>>,
    ) {
        let units: u64 = items.into_iter().map(|w| self.units_of(&w)).sum();
        calls.add_units(
            SERVICE,
            WRITE_UNITS,
            units * if transaction { 2 } else { 1 },
        );
    }

    /// Bills one strongly consistent read of `items` (a page of a query, or a get).
    pub fn read<'a>(&self, calls: &CallCounter, items: impl IntoIterator<Item = &'a Item>) {
        let size = items.into_iter().map(item_size).sum();
        calls.add_units(SERVICE, READ_UNITS, read_units(size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> AttributeValue {
        AttributeValue::S(text.to_owned())
    }

    #[test]
    fn sizes_follow_dynamodbs_rules() {
        // Names and string values count their UTF-8 bytes.
        assert_eq!(item_size(&Item::from([("ab".into(), s("héllo"))])), 2 + 6);
        // Numbers: a byte per two significant digits, plus one.
        for (number, size) in [
            ("7", 2),
            ("1234", 3),
            ("12345", 4),
            ("1000", 2),
            ("-0.25", 2),
        ] {
            assert_eq!(number_size(number), size, "{number}");
        }
        // A map: three bytes, and a byte per element beside its name and value.
        let map = AttributeValue::M(HashMap::from([("k".into(), s("vv"))]));
        assert_eq!(value_size(&map), 3 + 1 + 1 + 2);
        let list = AttributeValue::L(vec![AttributeValue::Bool(true), s("x")]);
        assert_eq!(value_size(&list), 3 + 2 + 2);
    }

    #[test]
    fn units_round_up_per_item_and_double_in_transactions() {
        let calls = CallCounter::default();
        let capacity = Capacity::default();
        let big = Item::from([("v".into(), s(&"x".repeat(2500)))]);
        let small = Item::from([("v".into(), s("x"))]);
        capacity.write(&calls, false, [Written::Item(&big), Written::Item(&small)]);
        assert_eq!(calls.units()[&(SERVICE, WRITE_UNITS)], 3 + 1);
        capacity.saw_order_row(&big);
        capacity.write(&calls, true, [Written::OrderRow, Written::Lock]);
        assert_eq!(calls.units()[&(SERVICE, WRITE_UNITS)], 4 + 2 * (3 + 1));
        // An event is written to its table and to the table's index.
        capacity.write(&calls, false, [Written::Event(&small)]);
        assert_eq!(calls.units()[&(SERVICE, WRITE_UNITS)], 12 + 2);
        // Reads round up what the request read as a whole, 4 KB a unit.
        capacity.read(&calls, [&big, &big]);
        capacity.read(&calls, []);
        assert_eq!(calls.units()[&(SERVICE, READ_UNITS)], 2 + 1);
    }
}
