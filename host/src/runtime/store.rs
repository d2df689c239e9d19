//! A plugin's store: its grants, its feed and the limits the engine enforces on it.

use super::cpu::{CpuClock, CpuMeter};
use super::feed::Feed;
use super::grants::Grants;
use super::limiter::Limiter;
use super::outbound::Outbound;
use super::quota::DiskUsage;
use crate::limits::Limits;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;
use wasmtime::component::ResourceTable;
use wasmtime::{CallHook, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Fuel between two chances for the executor to look at the stop signal, the deadline and the
/// CPU budget while a plugin computes without calling the host: about 5 ms. Fuel is metered
/// only for these yield points (the budget is CPU time, `cpu.rs`), so compute needs no second
/// instrumentation (such as epoch interruption) and no ticker thread to be stoppable.
const YIELD_FUEL: u64 = 10_000_000;

/// The store data of one plugin.
pub(crate) struct Sandbox {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    pub(crate) limiter: Limiter,
    pub(crate) feed: Arc<Feed>,
    pub(crate) cpu: Arc<CpuMeter>,
    pub(crate) disk: DiskUsage,
    pub(crate) http: WasiHttpCtx,
    pub(crate) outbound: Outbound,
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

impl WasiHttpView for Sandbox {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// A store for one run of a plugin with `limits`: its CPU account (shared with the caller, which
/// meters each step of the run), its yield points, and its budget looked at as each host call
/// returns.
pub(crate) fn new_store(
    engine: &Engine,
    limits: &Limits,
    clock: CpuClock,
    grants: Grants,
    feed: Arc<Feed>,
    mut outbound: Outbound,
) -> wasmtime::Result<(Store<Sandbox>, Arc<CpuMeter>)> {
    let mut table = ResourceTable::new();
    table.set_max_capacity(limits.handles);
    let cpu = Arc::new(CpuMeter::new(limits, clock, Instant::now()));
    outbound.meter = Some(cpu.clone());
    let mut store = Store::new(
        engine,
        Sandbox {
            wasi: grants.wasi,
            table,
            limiter: Limiter::new(limits),
            feed,
            cpu: cpu.clone(),
            disk: grants.disk,
            http: WasiHttpCtx::new(),
            outbound,
            _state_lock: grants.state_lock,
        },
    );
    store.limiter(|sandbox| &mut sandbox.limiter);
    store.call_hook(|store, hook| {
        if let CallHook::ReturningFromHost = hook {
            store.data().cpu.check()?;
        }
        Ok(())
    });
    // Never runs out: fuel only paces the yields.
    store.set_fuel(u64::MAX)?;
    store.fuel_async_yield_interval(Some(YIELD_FUEL))?;
    Ok((store, cpu))
}
