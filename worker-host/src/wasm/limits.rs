//! The memory limit of a guest, and how hitting it is remembered.
//!
//! A WebAssembly `memory.grow` past the limit fails the standard way (the guest sees -1 and
//! its allocator decides what to do: Rust aborts, C's `malloc` returns NULL). The guard
//! counts every memory of the store against one budget and remembers a refusal, so an
//! order that then traps or exits non-zero is reported as having hit its memory limit
//! rather than with whatever the guest made of it.

use wasmtime::ResourceLimiter;

/// Largest table a guest may grow (elements); tables hold function references.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;

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
        let total = self.used_bytes - current.min(self.used_bytes) + desired;
        if total > self.limit_bytes {
            self.refused = Some(self.refused.unwrap_or(0).max(total));
            return Ok(false);
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
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
}
