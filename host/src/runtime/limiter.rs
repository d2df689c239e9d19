//! Enforces a plugin's memory and table limits across everything its component instantiates.

use crate::limits::Limits;

/// Core instances, tables and memories one plugin may create. A Rust component for
/// wasm32-wasip2 needs a handful of each; the caps only stop a component built to exhaust the
/// host by multiplying them.
const MAX_INSTANCES: usize = 100;
const MAX_TABLES: usize = 100;
const MAX_MEMORIES: usize = 10;

/// Why a plugin was stopped for growing past a limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum LimitExceeded {
    /// All its linear memories together would pass `limit` bytes.
    #[error("memory would grow past the plugin's limit of {limit} bytes")]
    Memory {
        /// The limit, in bytes.
        limit: usize,
    },
    /// A table would pass `limit` elements.
    #[error("a table would grow past the plugin's limit of {limit} elements")]
    Table {
        /// The limit, in elements.
        limit: usize,
    },
}

/// Counts memory over all of a store's memories, so that a component with many memories gets no
/// more than one with a single memory.
pub(crate) struct Limiter {
    memory_limit: usize,
    table_elements: usize,
    memory_used: usize,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Limiter {
            memory_limit: limits.memory_bytes,
            table_elements: limits.table_elements,
            memory_used: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if maximum.is_some_and(|max| desired > max) {
            // Past the memory's own maximum: the guest sees a failed memory.grow, as the
            // specification says, and nothing is counted.
            return Ok(false);
        }
        let growth = desired.saturating_sub(current);
        let total = self.memory_used.saturating_add(growth);
        if total > self.memory_limit {
            // An error, not `false`: the plugin is stopped with a reason instead of seeing a
            // failed `memory.grow` that Rust's allocator would turn into an abort anyway.
            return Err(LimitExceeded::Memory {
                limit: self.memory_limit,
            }
            .into());
        }
        // Counted now; if the OS then fails to provide it, the plugin is charged for memory it
        // does not have, which errs on the safe side.
        self.memory_used = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            return Err(LimitExceeded::Table {
                limit: self.table_elements,
            }
            .into());
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    fn limiter(memory_bytes: usize, table_elements: usize) -> Limiter {
        Limiter::new(&Limits {
            memory_bytes,
            table_elements,
            ..Limits::default()
        })
    }

    #[test]
    fn memory_is_counted_across_memories() {
        let mut limiter = limiter(100, 10);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        let err = limiter.memory_growing(0, 50, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::Memory { limit: 100 }),
            "a second memory counts too"
        );
        assert!(
            limiter.memory_growing(0, 40, None).unwrap(),
            "exactly at the limit"
        );
    }

    #[test]
    fn growth_past_a_memorys_own_maximum_fails_softly_and_costs_nothing() {
        let mut limiter = limiter(100, 10);
        assert!(!limiter.memory_growing(0, 80, Some(50)).unwrap());
        assert!(limiter.memory_growing(0, 100, None).unwrap());
    }

    #[test]
    fn tables_are_capped_per_table() {
        let mut limiter = limiter(100, 10);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        let err = limiter.table_growing(10, 11, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<LimitExceeded>(),
            Some(&LimitExceeded::Table { limit: 10 })
        );
    }
}
