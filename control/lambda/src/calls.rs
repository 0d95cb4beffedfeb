//! Counting AWS calls per service and operation.
//!
//! Every adapter call goes through [`CallCounter::count`] just before the request, pages
//! included, so the counts are what AWS bills and throttles. The end-to-end tests print
//! them, and docs/aws.md reports calls per order as a run grows.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// Calls made, by `(service, operation)`. Cheap to clone: clones share the counts.
#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    counts: Arc<Mutex<BTreeMap<(&'static str, &'static str), u64>>>,
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

    /// Forgets the counts.
    pub fn reset(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

impl fmt::Display for CallCounter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for ((service, operation), n) in self.snapshot() {
            writeln!(f, "{service:>8} {operation:<24} {n}")?;
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
        assert_eq!(counter.snapshot()[&("s3", "GetObject")], 2);
        assert_eq!(counter.total(), 3);
        assert!(counter.to_string().contains("GetObject"));
        counter.reset();
        assert_eq!(clone.total(), 0);
    }
}
