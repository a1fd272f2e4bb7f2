//! `[build]`: image builds from a Containerfile: how large a context may
//! be, and whether instructions that need a container runtime (`RUN`)
//! are handed to one.

use std::time::Duration;

use serde::Deserialize;

use super::{invalid, parse_positive_duration, parse_size, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawBuild {
    max_context_size: String,
    max_context_files: u64,
    runner: String,
    timeout: String,
    max_output_size: String,
    network: bool,
    add_urls: Vec<String>,
}

impl Default for RawBuild {
    fn default() -> Self {
        RawBuild {
            max_context_size: "2GiB".into(),
            max_context_files: 100_000,
            runner: "none".into(),
            timeout: "30m".into(),
            max_output_size: "10GiB".into(),
            network: false,
            add_urls: Vec::new(),
        }
    }
}

/// Who runs a build's `RUN` instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runner {
    /// Nobody: a Containerfile with `RUN` fails at once, naming the line.
    None,
    /// buildah (the Debian package), rootless-style isolation, no network
    /// unless `network = true`.
    Buildah,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BuildConfig {
    pub(crate) max_context_size: u64,
    pub(crate) max_context_files: u64,
    pub(crate) runner: Runner,
    /// A build running longer is stopped and fails.
    pub(crate) timeout: Duration,
    /// Bytes a runner's result may have.
    pub(crate) max_output_size: u64,
    /// Whether `RUN` may reach the network.
    pub(crate) network: bool,
    /// URL prefixes `ADD` may fetch from (none: `ADD <url>` is refused).
    pub(crate) add_urls: Vec<String>,
}

impl Default for BuildConfig {
    fn default() -> Self {
        // The defaults parse: a failure here is a bug caught by the tests.
        RawBuild::default().validate().unwrap_or(BuildConfig {
            max_context_size: 2 << 30,
            max_context_files: 100_000,
            runner: Runner::None,
            timeout: Duration::from_secs(1800),
            max_output_size: 10 << 30,
            network: false,
            add_urls: Vec::new(),
        })
    }
}

impl RawBuild {
    pub(super) fn validate(self) -> Result<BuildConfig, ConfigError> {
        let max_context_size = parse_size("build.max_context_size", &self.max_context_size)?;
        if max_context_size == 0 {
            return Err(invalid("build.max_context_size", "must be more than 0"));
        }
        if self.max_context_files == 0 {
            return Err(invalid("build.max_context_files", "must be at least 1"));
        }
        let runner = match self.runner.as_str() {
            "none" => Runner::None,
            "buildah" => Runner::Buildah,
            other => return Err(invalid("build.runner", format!("{other:?} is not \"none\" or \"buildah\""))),
        };
        Ok(BuildConfig {
            max_context_size,
            max_context_files: self.max_context_files,
            runner,
            timeout: parse_positive_duration("build.timeout", &self.timeout)?,
            max_output_size: parse_size("build.max_output_size", &self.max_output_size)?,
            network: self.network,
            add_urls: {
                crate::build::fetch::AddUrls::new(&self.add_urls).map_err(|e| invalid("build.add_urls", e))?;
                self.add_urls
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::load_str;
    use super::*;

    #[test]
    fn defaults_build_without_a_runner_and_bound_the_context() {
        let c = load_str("", &[]).unwrap();
        assert_eq!(c.build, BuildConfig::default());
        assert_eq!((c.build.max_context_size, c.build.runner, c.build.network), (2 << 30, Runner::None, false));
        let c = load_str("[build]\nrunner = \"buildah\"\nmax_context_size = \"10MiB\"\ntimeout = \"90s\"\n", &[]).unwrap();
        assert_eq!((c.build.runner, c.build.max_context_size, c.build.timeout), (Runner::Buildah, 10 << 20, Duration::from_secs(90)));
    }

    #[test]
    fn bad_values_name_their_key() {
        for (toml, key) in [
            ("[build]\nrunner = \"docker\"\n", "build.runner"),
            ("[build]\nmax_context_size = \"lots\"\n", "build.max_context_size"),
            ("[build]\nmax_context_files = 0\n", "build.max_context_files"),
            ("[build]\ntimeout = \"0s\"\n", "build.timeout"),
            ("[build]\nadd_urls = [\"ftp://example.com/\"]\n", "build.add_urls"),
        ] {
            let e = load_str(toml, &[]).unwrap_err().to_string();
            assert!(e.contains(key), "{toml}: {e}");
        }
    }
}
