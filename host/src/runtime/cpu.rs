//! CPU is granted for work on events. A feed call that delivers events refills the plugin's
//! fuel in full; a call that delivers nothing (`head`, an empty `poll`, `wait`) only adds what
//! the plugin earned at its idle rate since its last grant, so that cheap calls cannot be turned
//! into unlimited computation while a plugin that waits and does a little periodic work keeps
//! running.

use crate::limits::Limits;
use std::time::Instant;

/// The fuel grants of one plugin.
#[derive(Debug)]
pub(crate) struct CpuGrant {
    fuel: u64,
    idle_per_second: u64,
    last_grant: Instant,
}

impl CpuGrant {
    pub(crate) fn new(limits: &Limits, now: Instant) -> Self {
        CpuGrant {
            fuel: limits.fuel,
            idle_per_second: limits.idle_fuel_per_second,
            last_grant: now,
        }
    }

    /// The fuel to start with: a full grant.
    pub(crate) fn initial(&self) -> u64 {
        self.fuel
    }

    /// The fuel a plugin holds after a call that delivered events: a full grant.
    pub(crate) fn delivered(&mut self, now: Instant) -> u64 {
        self.last_grant = now;
        self.fuel
    }

    /// The fuel a plugin holds after a call that delivered nothing: what it had left, plus what
    /// it earned since its last grant, never more than a full grant.
    pub(crate) fn idle(&mut self, remaining: u64, now: Instant) -> u64 {
        let nanos = now.saturating_duration_since(self.last_grant).as_nanos();
        let earned = u128::from(self.idle_per_second) * nanos / 1_000_000_000;
        self.last_grant = now;
        let earned = u64::try_from(earned).unwrap_or(u64::MAX);
        remaining.saturating_add(earned).min(self.fuel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn grant(fuel: u64, idle_per_second: u64, now: Instant) -> CpuGrant {
        CpuGrant::new(
            &Limits {
                fuel,
                idle_fuel_per_second: idle_per_second,
                ..Limits::default()
            },
            now,
        )
    }

    #[test]
    fn a_delivering_call_refills_in_full() {
        let t0 = Instant::now();
        let mut cpu = grant(1000, 10, t0);
        assert_eq!(cpu.initial(), 1000);
        assert_eq!(cpu.delivered(t0 + Duration::from_millis(1)), 1000);
    }

    #[test]
    fn a_call_that_delivers_nothing_adds_only_what_was_earned_at_the_idle_rate() {
        let t0 = Instant::now();
        let mut cpu = grant(1000, 100, t0);
        assert_eq!(cpu.idle(10, t0 + Duration::from_millis(500)), 60);
        assert_eq!(
            cpu.idle(60, t0 + Duration::from_millis(500)),
            60,
            "no time passed, nothing earned"
        );
        assert_eq!(cpu.idle(990, t0 + Duration::from_secs(60)), 1000, "capped");
    }

    #[test]
    fn computing_faster_than_the_idle_rate_runs_out() {
        // A plugin that burns 100 fuel per millisecond and calls `head` after each, against an
        // idle rate of 10 fuel per millisecond: its fuel drains by 90 a round.
        let t0 = Instant::now();
        let mut cpu = grant(1000, 10_000, t0);
        let mut fuel = cpu.initial();
        let mut rounds = 0;
        while fuel >= 100 {
            fuel -= 100;
            rounds += 1;
            fuel = cpu.idle(fuel, t0 + Duration::from_millis(rounds));
        }
        assert!((10..=12).contains(&rounds), "{rounds} rounds");
    }
}
