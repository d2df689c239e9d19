//! Enforces a plugin's memory and table limits across everything its component instantiates.

use crate::limits::Limits;

/// Core instances, tables and memories one plugin may create. A Rust component for
/// wasm32-wasip2 needs a handful of each; the caps only stop a component built to exhaust the
/// host by multiplying them.
const MAX_INSTANCES: usize = 100;
const MAX_TABLES: usize = 100;
const MAX_MEMORIES: usize = 10;

/// A plugin was stopped for growing a table past `limit` elements. (Tables are not something a
/// language runtime recovers from running out of, unlike memory, so this stops the plugin.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a table would grow past the plugin's limit of {limit} elements")]
pub(crate) struct TableLimitExceeded {
    /// The limit, in elements.
    pub(crate) limit: usize,
}

/// Counts memory over all of a store's memories, so that a component with many memories gets no
/// more than one with a single memory.
pub(crate) struct Limiter {
    memory_limit: usize,
    table_elements: usize,
    memory_used: usize,
    memory_refused: bool,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Limiter {
            memory_limit: limits.memory_bytes,
            table_elements: limits.table_elements,
            memory_used: 0,
            memory_refused: false,
        }
    }

    /// The linear memory the plugin holds, all memories together.
    pub(crate) fn memory_used(&self) -> usize {
        self.memory_used
    }

    /// The memory limit, if growing past it was refused.
    pub(crate) fn refused(&self) -> Option<usize> {
        self.memory_refused.then_some(self.memory_limit)
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
            // The guest sees a failed `memory.grow`, as it would on a machine out of memory: a
            // language runtime that can recover (free a cache, raise MemoryError) may. Most
            // abort; the refusal is remembered so that the report names the limit, not the
            // `unreachable` or exit status the abort becomes.
            self.memory_refused = true;
            return Ok(false);
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
            return Err(TableLimitExceeded {
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
        assert_eq!(limiter.refused(), None);
        assert!(
            !limiter.memory_growing(0, 50, None).unwrap(),
            "a second memory counts too"
        );
        assert_eq!(limiter.refused(), Some(100));
        assert!(
            limiter.memory_growing(0, 40, None).unwrap(),
            "exactly at the limit"
        );
    }

    #[test]
    fn growth_past_a_memorys_own_maximum_fails_softly_and_costs_nothing() {
        let mut limiter = limiter(100, 10);
        assert!(!limiter.memory_growing(0, 80, Some(50)).unwrap());
        assert_eq!(limiter.refused(), None, "not the plugin's limit");
        assert!(limiter.memory_growing(0, 100, None).unwrap());
    }

    #[test]
    fn tables_are_capped_per_table() {
        let mut limiter = limiter(100, 10);
        assert!(limiter.table_growing(0, 10, None).unwrap());
        let err = limiter.table_growing(10, 11, None).unwrap_err();
        assert_eq!(
            err.downcast_ref::<TableLimitExceeded>(),
            Some(&TableLimitExceeded { limit: 10 })
        );
    }
}
