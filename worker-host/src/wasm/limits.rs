//! The memory limit of a guest, and how hitting it is remembered.
//!
//! A WebAssembly `memory.grow` past the limit fails the standard way (the guest sees -1 and
//! its allocator decides what to do: Rust aborts, C's `malloc` returns NULL). The guard
//! counts every memory and every table of the store against one budget (a table element
//! costs the host [`TABLE_ELEMENT_BYTES`]: a module declaring many large tables would
//! otherwise allocate outside the budget) and remembers a refusal, so an order that then
//! traps, fails to instantiate or exits non-zero is reported as having hit its memory limit
//! rather than with whatever the guest made of it.

use wasmtime::ResourceLimiter;

/// Largest table a guest may grow (elements); tables hold function references.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// What one table element costs the host: a pointer-sized reference.
pub const TABLE_ELEMENT_BYTES: usize = 8;

/// The store's memory budget.
#[derive(Debug)]
pub struct MemoryGuard {
    limit_mb: u64,
    limit_bytes: usize,
    used_bytes: usize,
    refused: Option<usize>,
}

impl MemoryGuard {
    /// A budget of `limit_mb` MiB for all the guest's memories together.
    pub fn new(limit_mb: u64) -> Self {
        let limit_bytes = usize::try_from(limit_mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        MemoryGuard {
            limit_mb,
            limit_bytes,
            used_bytes: 0,
            refused: None,
        }
    }

    /// The budget, MiB.
    pub fn limit_mb(&self) -> u64 {
        self.limit_mb
    }

    /// When a growth was refused: the total the guest asked for, in bytes.
    pub fn refused(&self) -> Option<usize> {
        self.refused
    }
}

impl ResourceLimiter for MemoryGuard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

impl MemoryGuard {
    /// Grows one memory or table from `current` to `desired` bytes if the budget allows.
    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let total = (self.used_bytes - current.min(self.used_bytes)).saturating_add(desired);
        if total > self.limit_bytes {
            self.refused = Some(self.refused.unwrap_or(0).max(total));
            return false;
        }
        self.used_bytes = total;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn all_memories_share_one_budget_and_a_refusal_is_remembered() {
        let mut guard = MemoryGuard::new(10);
        assert!(guard.memory_growing(0, 4 * MIB, None).unwrap());
        assert!(guard.memory_growing(4 * MIB, 6 * MIB, None).unwrap());
        assert_eq!(guard.refused(), None);
        // A second memory: 6 + 5 > 10.
        assert!(!guard.memory_growing(0, 5 * MIB, None).unwrap());
        assert_eq!(guard.refused(), Some(11 * MIB));
        assert!(guard.memory_growing(0, 4 * MIB, None).unwrap());
    }

    #[test]
    fn tables_count_against_the_same_budget() {
        // Failed before tables were counted: every table up to 2^20 elements was free.
        let mut guard = MemoryGuard::new(10);
        assert!(guard.memory_growing(0, 8 * MIB, None).unwrap());
        let elements = MIB / TABLE_ELEMENT_BYTES;
        assert!(guard.table_growing(0, elements, None).unwrap());
        assert!(!guard.table_growing(0, 2 * elements, None).unwrap());
        assert_eq!(guard.refused(), Some(11 * MIB));
    }
}
