//! Why a plugin's run failed, named from what wasmtime reports and from what the host refused
//! the plugin while it ran, so that a limit reads as that limit whatever the guest's language
//! runtime made of the refusal.

use super::cpu::CpuBudgetSpent;
use super::limiter::TableLimitExceeded;
use super::{Failure, QuotaBreach};
use crate::limits::Limits;
use std::collections::BTreeSet;
use wasmtime::component::ResourceTableError;
use wasmtime::{Trap, WasmBacktrace};
use wasmtime_wasi::I32Exit;

/// What the host refused a plugin during its run.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Refusals {
    /// Memory growth past this limit.
    pub(crate) memory: Option<usize>,
    /// Disk past its quota.
    pub(crate) disk: Option<QuotaBreach>,
    /// The plugin's runtime said it ran out of memory.
    pub(crate) out_of_memory: bool,
}

impl Refusals {
    /// A plugin that failed in its own way (a trap, an error exit) after the host refused it
    /// memory or disk failed because of that refusal, whatever its language runtime made of
    /// it; so did one whose runtime said it ran out of memory (a request larger than any
    /// 32-bit memory never reaches the host).
    pub(crate) fn blame(self, failure: Failure, limits: &Limits) -> Failure {
        if !matches!(failure, Failure::Trap(_) | Failure::Exit(_)) {
            return failure;
        }
        match self {
            Refusals {
                memory: Some(limit),
                ..
            } => Failure::Memory { limit },
            Refusals {
                disk: Some(breach), ..
            } => Failure::DiskQuota(breach),
            Refusals {
                out_of_memory: true,
                ..
            } => Failure::Memory {
                limit: limits.memory_bytes,
            },
            _ => failure,
        }
    }
}

/// The address at which a guest's stack pointer lands when the stack it keeps in linear memory
/// overflows: a Rust guest's stack grows down from 1 MiB towards 0, and one frame more wraps
/// it to just under 4 GiB, far outside any memory a plugin is allowed.
const WRAPPED_STACK_FLOOR: u64 = (1 << 32) - (64 << 20);

/// The address of an out-of-bounds access, from wasmtime's description of the fault (there is
/// none when a bulk memory operation checked its bounds itself).
fn fault_address(error: &wasmtime::Error) -> Option<u64> {
    error.chain().find_map(|cause| {
        let text = cause.to_string();
        let hex = text
            .strip_prefix("memory fault at wasm address 0x")?
            .split(' ')
            .next()?;
        u64::from_str_radix(hex, 16).ok()
    })
}

/// Functions a backtrace may cycle through and still read as one recursion.
const RECURSION_CYCLE: usize = 4;

/// Whether the trap came at the bottom of a recursion: the backtrace is as deep as wasmtime
/// records, and cycles through a few functions.
fn in_deep_recursion(error: &wasmtime::Error) -> bool {
    let Some(backtrace) = error.downcast_ref::<WasmBacktrace>() else {
        return false;
    };
    let frames = backtrace.frames();
    let functions: BTreeSet<u32> = frames.iter().map(|f| f.func_index()).collect();
    frames.len() >= MAX_BACKTRACE_FRAMES && functions.len() <= RECURSION_CYCLE
}

/// wasmtime's default depth of a recorded backtrace.
const MAX_BACKTRACE_FRAMES: usize = 20;

/// Names the reason for a failed run, with the full error for `--verbose`.
pub(crate) fn classify(error: wasmtime::Error, limits: &Limits) -> (Failure, Option<String>) {
    let failure = if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return (Failure::Exit(exit.0), None);
    } else if error.downcast_ref::<CpuBudgetSpent>().is_some() {
        Failure::CpuBudget { cpu: limits.cpu }
    } else if let Some(TableLimitExceeded { limit }) = error.downcast_ref() {
        Failure::Table { limit: *limit }
    } else if let Some(ResourceTableError::Full) = error.downcast_ref::<ResourceTableError>() {
        Failure::Handles {
            limit: limits.handles,
        }
    } else if let Some(trap) = error.downcast_ref::<Trap>() {
        match trap {
            Trap::StackOverflow => Failure::StackOverflow,
            // A Rust or C guest keeps its stack in linear memory; overflowing it is an access
            // below address 0, which wraps to the top of the 32-bit space.
            Trap::MemoryOutOfBounds
                if fault_address(&error).is_some_and(|a| a >= WRAPPED_STACK_FLOOR)
                    || in_deep_recursion(&error) =>
            {
                Failure::StackOverflow
            }
            // wasmtime says "wasm trap: ..."; "trapped: " says it already.
            other => {
                let said = other.to_string();
                Failure::Trap(said.strip_prefix("wasm trap: ").unwrap_or(&said).to_owned())
            }
        }
    } else {
        Failure::Trap(error.root_cause().to_string())
    };
    (failure, Some(format!("{error:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_the_failure_that_followed_it() {
        let limits = Limits::default();
        let memory = Refusals {
            memory: Some(1 << 20),
            ..Refusals::default()
        };
        let trap = Failure::Trap("wasm `unreachable` instruction executed".into());
        assert_eq!(
            memory.blame(trap.clone(), &limits),
            Failure::Memory { limit: 1 << 20 }
        );
        assert_eq!(
            memory.blame(Failure::Exit(1), &limits),
            Failure::Memory { limit: 1 << 20 }
        );
        assert_eq!(
            memory.blame(Failure::StackOverflow, &limits),
            Failure::StackOverflow,
            "a failure with a reason of its own keeps it"
        );
        let disk = Refusals {
            disk: Some(QuotaBreach::Entries(10)),
            ..Refusals::default()
        };
        assert_eq!(
            disk.blame(trap.clone(), &limits),
            Failure::DiskQuota(QuotaBreach::Entries(10))
        );
        let said = Refusals {
            out_of_memory: true,
            ..Refusals::default()
        };
        assert_eq!(
            said.blame(trap.clone(), &limits),
            Failure::Memory {
                limit: limits.memory_bytes
            }
        );
        assert_eq!(Refusals::default().blame(trap.clone(), &limits), trap);
    }

    #[test]
    fn the_fault_address_is_read_from_wasmtimes_description() {
        let error = wasmtime::Error::msg("wasm trap: out of bounds memory access")
            .context("memory fault at wasm address 0xfffffff0 in linear memory of size 0x110000");
        assert_eq!(fault_address(&error), Some(0xffff_fff0));
        assert_eq!(fault_address(&wasmtime::Error::msg("no address")), None);
    }
}
