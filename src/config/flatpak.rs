//! `[flatpak]`: Flatpak's registry index (`/index/static`,
//! `/index/dynamic`) on the registry port.

use std::time::Duration;

use serde::Deserialize;

use super::{parse_duration, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawFlatpak {
    index: bool,
    max_age: String,
}

impl Default for RawFlatpak {
    fn default() -> Self {
        RawFlatpak { index: false, max_age: "60s".into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlatpakConfig {
    /// Whether the index is served (and image configs read for it).
    pub(crate) index: bool,
    /// How long clients and caches may keep an `/index/static` answer.
    pub(crate) max_age: Duration,
}

impl Default for FlatpakConfig {
    fn default() -> Self {
        FlatpakConfig { index: false, max_age: Duration::from_secs(60) }
    }
}

impl RawFlatpak {
    pub(super) fn validate(self) -> Result<FlatpakConfig, ConfigError> {
        Ok(FlatpakConfig { index: self.index, max_age: parse_duration("flatpak.max_age", &self.max_age)? })
    }
}
