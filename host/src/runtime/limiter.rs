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
    /// The growth last allowed, undone if wasmtime then fails to grow.
    pending: usize,
}

impl Limiter {
    pub(crate) fn new(limits: &Limits) -> Self {
        Limiter {
            memory_limit: limits.memory_bytes,
            table_elements: limits.table_elements,
            memory_used: 0,
            pending: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
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
        self.memory_used = total;
        self.pending = growth;
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.memory_used -= self.pending;
        self.pending = 0;
        Ok(())
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

    #[test]
    fn memory_is_counted_across_memories_and_failed_growth_is_returned() {
        let limits = Limits {
            memory_bytes: 100,
            ..Limits::default()
        };
        let mut limiter = Limiter::new(&limits);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(
            limiter.memory_growing(0, 50, None).is_err(),
            "a second memory counts too"
        );
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        limiter
            .memory_grow_failed(wasmtime::Error::msg("no"))
            .unwrap();
        assert!(
            limiter.memory_growing(60, 100, None).unwrap(),
            "the failed 40 was given back"
        );
    }
}
