//! A [`wasmtime::ResourceLimiter`] that caps the *sum* of every linear
//! memory and table in a store. wasmtime's `StoreLimits` caps each memory on
//! its own, so a component with several memories could exceed the intended
//! budget; this one cannot.

use wasmtime::ResourceLimiter;

/// 10,000 table elements: far above what guests need for function tables.
pub const MAX_TABLE_ELEMENTS: usize = 10_000;

/// The memory limit a call hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("memory limit of {limit} bytes reached: the plugin asked for {requested} bytes in total")]
pub struct MemoryLimitHit {
    /// The configured cap.
    pub limit: usize,
    /// What the store would have held.
    pub requested: usize,
}

/// Sums all memories and tables of one store.
#[derive(Debug, Clone)]
pub struct TotalLimiter {
    limit: usize,
    used: usize,
    peak: usize,
    table_elements: usize,
    hit: Option<MemoryLimitHit>,
}

impl TotalLimiter {
    /// A limiter allowing `limit` bytes of linear memory in total.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            peak: 0,
            table_elements: 0,
            hit: None,
        }
    }

    /// The largest total the store reached.
    pub fn peak(&self) -> usize {
        self.peak
    }

    /// The limit hit, if any: set before the failing grow traps.
    pub fn hit(&self) -> Option<MemoryLimitHit> {
        self.hit
    }
}

impl ResourceLimiter for TotalLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let requested = self.used.saturating_sub(current).saturating_add(desired);
        if requested > self.limit {
            let hit = MemoryLimitHit {
                limit: self.limit,
                requested,
            };
            self.hit = Some(hit);
            // Trap now: a guest that sees memory.grow fail would abort
            // anyway, and a trap names the cause.
            return Err(wasmtime::Error::new(hit));
        }
        self.used = requested;
        self.peak = self.peak.max(self.used);
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let requested = self.table_elements.saturating_sub(current).saturating_add(desired);
        if requested > MAX_TABLE_ELEMENTS {
            return Ok(false);
        }
        self.table_elements = requested;
        Ok(true)
    }

    fn instances(&self) -> usize {
        // Rust and JS components instantiate a handful of core modules;
        // Python's more. Bounded by the pooling allocator as well.
        64
    }

    fn memories(&self) -> usize {
        16
    }

    fn tables(&self) -> usize {
        64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_memories_and_refuses_past_the_total() {
        let mut l = TotalLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        // A second memory of 60 would make 120 in total.
        assert!(l.memory_growing(0, 60, None).is_err());
        assert_eq!(
            l.hit(),
            Some(MemoryLimitHit {
                limit: 100,
                requested: 120
            })
        );
        assert_eq!(l.peak(), 60);
    }

    #[test]
    fn growth_counts_only_the_difference() {
        let mut l = TotalLimiter::new(100);
        assert!(l.memory_growing(0, 50, None).unwrap());
        assert!(l.memory_growing(50, 100, None).unwrap());
        assert_eq!(l.peak(), 100);
        assert!(l.hit().is_none());
    }
}
