//! A plugin's store: its grants, its feed and the limits the engine enforces on it.

use super::cpu::CpuGrant;
use super::feed::Feed;
use super::grants::Grants;
use super::limiter::Limiter;
use super::quota::DiskUsage;
use crate::limits::Limits;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Fuel between two chances for the executor to look at the stop signal and the deadline while
/// a plugin computes: about 5 ms. The fuel already metered for the CPU budget gives these
/// yield points, so compute needs no second instrumentation (such as epoch interruption) and no
/// ticker thread to be stoppable.
const YIELD_FUEL: u64 = 10_000_000;

/// The store data of one plugin.
pub(crate) struct Sandbox {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) feed: Arc<Feed>,
    pub(crate) cpu: CpuGrant,
    pub(crate) disk: DiskUsage,
    /// Held, locked, for as long as the store lives.
    _state_lock: File,
}

impl WasiView for Sandbox {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A store for one run of a plugin with `limits`, its fuel set and its yield points on.
pub(crate) fn new_store(
    engine: &Engine,
    limits: &Limits,
    grants: Grants,
    feed: Feed,
) -> wasmtime::Result<Store<Sandbox>> {
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.handles);
    let cpu = CpuGrant::new(limits, Instant::now());
    let fuel = cpu.initial();
    let mut store = Store::new(
        engine,
        Sandbox {
            wasi: grants.wasi,
            table,
            limiter: Limiter::new(limits),
            feed: Arc::new(feed),
            cpu,
            disk: grants.disk,
            _state_lock: grants.state_lock,
        },
    );
    store.limiter(|sandbox| &mut sandbox.limiter);
    store.set_fuel(fuel)?;
    store.fuel_async_yield_interval(Some(YIELD_FUEL))?;
    Ok(store)
}
