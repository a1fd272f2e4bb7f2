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

#[cfg(test)]
mod tests {
    use super::super::tests::{load_str, refused};
    use super::*;

    #[test]
    fn the_index_is_off_unless_asked_for() {
        let c = load_str("", &[]).unwrap();
        assert_eq!(c.flatpak, FlatpakConfig { index: false, max_age: Duration::from_secs(60) });
        let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/wharf.toml");
        let documented = crate::config::Config::load(Some(&example), std::iter::empty()).unwrap();
        assert_eq!(documented.flatpak, FlatpakConfig::default(), "conf/wharf.toml shows the defaults");
        let c = load_str("[flatpak]\nindex = true\nmax_age = \"10m\"\n", &[]).unwrap();
        assert_eq!(c.flatpak, FlatpakConfig { index: true, max_age: Duration::from_secs(600) });
        assert_eq!(load_str("[flatpak]\nmax_age = \"0s\"\n", &[]).unwrap().flatpak.max_age, Duration::ZERO);
        assert!(refused("[flatpak]\nmax_age = \"soon\"\n").starts_with("flatpak.max_age"));
        assert!(refused("[flatpak]\nindexed = true\n").contains("indexed"));
    }
}
