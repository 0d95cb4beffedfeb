//! Counting AWS calls per service and operation, and the units billed beside them.
//!
//! Every adapter call goes through [`CallCounter::count`] just before the request, pages
//! included, so the counts are what AWS bills and throttles. Where a service bills by size
//! rather than by call (DynamoDB's request units), the adapter adds what the call costs
//! with [`CallCounter::add_units`]. The end-to-end tests print them, docs/aws.md reports
//! calls per order as a run grows, and the AWS benchmark prices them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Calls made, by `(service, operation)`. Cheap to clone: clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
    units: Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
}

impl CallCounter {
    /// Records one call.
    pub fn count(&self, service: &'static str, operation: &'static str) {
        *self
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((service, operation))
            .or_default() += 1;
    }

    /// Records `n` billed units of `unit` (e.g. DynamoDB's write request units).
    pub fn add_units(&self, service: &'static str, unit: &'static str, n: u64) {
        *self
            .units
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((service, unit))
            .or_default() += n;
    }

    /// The units billed so far, by `(service, unit)`.
    pub fn units(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.units.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The counts so far.
    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// All calls so far.
    pub fn total(&self) -> u64 {
        self.snapshot().values().sum()
    }

    /// Forgets the counts and units.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.units.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

impl fmt::Display for CallCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ((service, operation), n) in self.snapshot() {
            writeln!(f, "{service:>8} {operation:<24} {n}")?;
        }
        for ((service, unit), n) in self.units() {
            writeln!(f, "{service:>8} {unit:<24} {n} (units)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counts() {
        let counter = CallCounter::default();
        let clone = counter.clone();
        counter.count("s3", "GetObject");
        clone.count("s3", "GetObject");
        clone.count("dynamodb", "Query");
        clone.add_units("dynamodb", "read request units", 3);
        assert_eq!(counter.snapshot()[&("s3", "GetObject")], 2);
        assert_eq!(counter.total(), 3, "units are not calls");
        assert_eq!(counter.units()[&("dynamodb", "read request units")], 3);
        assert!(counter.to_string().contains("GetObject"));
        assert!(counter.to_string().contains("read request units"));
        counter.reset();
        assert_eq!(clone.total(), 0);
        assert!(clone.units().is_empty());
    }
}
