//! What a host tells a plugin beside the WIT, defined once for both sides: where its private
//! state lives ([`STATE_DIR`]), and where a plugin without a committed cursor starts. The host
//! chooses that (a manifest's `start`) and passes it in [`START_VARIABLE`]; the guest SDK reads
//! it back.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// The directory a host preopens for each plugin, private to it: where the guest SDK keeps the
/// plugin's checkpoint.
pub const STATE_DIR: &str = "/state";

/// The environment variable a host sets to tell a plugin where to start when it has no committed
/// cursor, in [`StartPosition`]'s text form: `beginning`, `head`, a seq (start after it), or
/// `time:<ms>`. Part of the contract between a host and the guest SDK beside the WIT.
pub const START_VARIABLE: &str = "PULSEWATCH_START";

/// Where a plugin without a committed cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum StartPosition {
    /// From the first event.
    #[default]
    Beginning,
    /// From the events appended after it starts.
    Head,
    /// From the events after this seq.
    After(u64),
    /// From the first event stamped at or after this time, in ms since the Unix epoch (the
    /// log's timestamp index answers where that is).
    Time(u64),
}

impl fmt::Display for StartPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartPosition::Beginning => f.write_str("beginning"),
            StartPosition::Head => f.write_str("head"),
            StartPosition::After(seq) => write!(f, "{seq}"),
            StartPosition::Time(ms) => write!(f, "time:{ms}"),
        }
    }
}

/// A text that is no [`StartPosition`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?}: expected beginning, head, a seq or time:<ms>")]
pub struct UnknownStart(pub String);

impl FromStr for StartPosition {
    type Err = UnknownStart;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let unknown = || UnknownStart(text.to_owned());
        match text {
            "beginning" => Ok(StartPosition::Beginning),
            "head" => Ok(StartPosition::Head),
            _ => match text.strip_prefix("time:") {
                Some(ms) => ms.parse().map(StartPosition::Time).map_err(|_| unknown()),
                None => text
                    .parse()
                    .map(StartPosition::After)
                    .map_err(|_| unknown()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_position_reads_back_as_written_and_anything_else_is_refused() {
        for start in [
            StartPosition::Beginning,
            StartPosition::Head,
            StartPosition::After(0),
            StartPosition::After(u64::MAX),
            StartPosition::Time(1_764_230_400_000),
        ] {
            assert_eq!(start.to_string().parse::<StartPosition>(), Ok(start));
        }
        for text in [
            "",
            "Head",
            "-1",
            "time:",
            "time:soon",
            "1.5",
            "18446744073709551616",
        ] {
            assert_eq!(
                text.parse::<StartPosition>(),
                Err(UnknownStart(text.to_owned()))
            );
        }
    }
}
