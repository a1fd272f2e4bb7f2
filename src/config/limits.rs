//! The `[limits]` section: inbound rate limits per client IP and per user,
//! and the proxies whose `X-Forwarded-For` is believed. Raw shape and its
//! validation only; the limiters themselves live in `crate::limits`. (The
//! outbound cap, `max_concurrent_requests`, is an `[[upstream]]` key; its
//! tests sit here with the other limits.)

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;

use super::{invalid, ConfigError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    per_ip_rate: f64,
    per_ip_burst: u32,
    per_user_rate: f64,
    per_user_burst: u32,
    trusted_proxies: Vec<String>,
}

/// Off by default: an edge cache behind NAT sees a whole site as one
/// address, and must not start throttling it by surprise.
impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            per_ip_rate: 0.0,
            per_ip_burst: 100,
            per_user_rate: 0.0,
            per_user_burst: 100,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Validated `[limits]`.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct LimitsConfig {
    /// Requests per client IP; None when `per_ip_rate = 0`.
    pub(crate) per_ip: Option<Rate>,
    /// Requests per signed-in user; None when `per_user_rate = 0`.
    pub(crate) per_user: Option<Rate>,
    /// Peers whose `X-Forwarded-For` names the client.
    pub(crate) trusted_proxies: Vec<IpNet>,
}

/// A token bucket: `burst` requests at once, refilled by one every `period`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Rate {
    pub(crate) period: Duration,
    pub(crate) burst: NonZeroU32,
}

/// An address block: an IP address and how many leading bits are fixed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `fd00::/8`, or a bare address (a block of one).
    /// Bits past the prefix must be zero, so a typo like `10.0.0.1/8` is
    /// caught rather than silently widened.
    pub(crate) fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| format!("{s:?} is not an IP address or CIDR block"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(p) if p <= max => p,
                _ => return Err(format!("{s:?}: the prefix length must be 0 to {max}")),
            },
        };
        let net = IpNet { addr, prefix };
        if net.network() != bits(addr) {
            return Err(format!("{s:?} has host bits set past /{prefix}"));
        }
        Ok(net)
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.addr.is_ipv4() && bits(ip) & self.mask() == self.network()
    }

    fn network(&self) -> u128 {
        bits(self.addr) & self.mask()
    }

    /// The prefix's bits set, in the same 128-bit space as [`bits`].
    fn mask(&self) -> u128 {
        let width = if self.addr.is_ipv4() { 32 } else { 128 };
        let host_bits = u32::from(width - self.prefix);
        let all = if width == 32 { u128::from(u32::MAX) } else { u128::MAX };
        // checked_shl: a /0 shifts by the whole width, leaving no bits.
        all.checked_shl(host_bits).unwrap_or(0) & all
    }
}

fn bits(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

impl RawLimits {
    pub(super) fn validate(self) -> Result<LimitsConfig, ConfigError> {
        let per_ip = rate("limits.per_ip_rate", self.per_ip_rate, "limits.per_ip_burst", self.per_ip_burst)?;
        let per_user =
            rate("limits.per_user_rate", self.per_user_rate, "limits.per_user_burst", self.per_user_burst)?;
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, s)| IpNet::parse(s).map_err(|e| invalid(format!("limits.trusted_proxies[{i}]"), e)))
            .collect::<Result<_, _>>()?;
        Ok(LimitsConfig { per_ip, per_user, trusted_proxies })
    }
}

/// `rate` requests per second (fractions allowed: 0.5 is one every two
/// seconds), 0 for no limit.
fn rate(rate_key: &str, rate: f64, burst_key: &str, burst: u32) -> Result<Option<Rate>, ConfigError> {
    let burst = NonZeroU32::new(burst).ok_or_else(|| invalid(burst_key, "must be at least 1"))?;
    if !rate.is_finite() || rate < 0.0 {
        return Err(invalid(rate_key, format!("{rate} is not a number of requests per second (0 turns the limit off)")));
    }
    if rate == 0.0 {
        return Ok(None);
    }
    let period = Duration::try_from_secs_f64(1.0 / rate)
        .ok()
        .filter(|p| !p.is_zero())
        .ok_or_else(|| invalid(rate_key, format!("{rate} requests per second is out of range")))?;
    Ok(Some(Rate { period, burst }))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::tests::{load_str as load, refused};
    use crate::config::Config;


    fn net(s: &str) -> IpNet {
        IpNet::parse(s).unwrap()
    }

    #[test]
    fn limits_are_off_by_default_and_upstreams_get_32_concurrent_requests() {
        let c = Config::load(None, std::iter::empty()).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!((c.limits.per_ip, c.limits.per_user), (None, None));
        assert_eq!(c.upstreams[0].max_concurrent_requests, 32);
    }

    #[test]
    fn the_example_config_documents_the_limits_at_their_defaults() {
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/wharf.toml");
        let c = Config::load(Some(&example), std::iter::empty()).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.upstreams[0].max_concurrent_requests, 32);
    }

    #[test]
    fn the_limits_section_is_read_and_overridable_from_the_environment() {
        let toml = "[limits]\nper_ip_rate = 1\nper_ip_burst = 3\nper_user_rate = 0.5\n\
                    trusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n\
                    [[upstream]]\nname = \"a\"\nurl = \"http://h\"\nmax_concurrent_requests = 2\n";
        let c = load(toml, &[]).unwrap();
        let per_ip = c.limits.per_ip.unwrap();
        assert_eq!((per_ip.period, per_ip.burst.get()), (Duration::from_secs(1), 3));
        let per_user = c.limits.per_user.unwrap();
        assert_eq!((per_user.period, per_user.burst.get()), (Duration::from_secs(2), 100));
        assert_eq!(c.limits.trusted_proxies, vec![IpNet::parse("10.0.0.0/8").unwrap(), IpNet::parse("::1").unwrap()]);
        assert_eq!(c.upstreams[0].max_concurrent_requests, 2);
        let c = load(toml, &[("WHARF_LIMITS__PER_IP_RATE", "4")]).unwrap();
        assert_eq!(c.limits.per_ip.unwrap().period, Duration::from_millis(250));
    }

    #[test]
    fn bad_limits_name_their_key() {
        let e = refused("[limits]\nper_ip_rate = 5\nper_ip_burst = 0\n");
        assert!(e.starts_with("limits.per_ip_burst: must be at least 1"), "{e}");
        let e = refused("[limits]\nper_user_rate = -1\n");
        assert!(e.starts_with("limits.per_user_rate"), "{e}");
        let e = refused("[limits]\nper_user_burst = 0\n");
        assert!(e.starts_with("limits.per_user_burst"), "{e}");
        let e = refused("[limits]\ntrusted_proxies = [\"10.0.0.0/8\", \"gateway\"]\n");
        assert!(e.starts_with("limits.trusted_proxies[1]: \"gateway\""), "{e}");
        let e = refused("[limits]\nper_ip_rat = 5\n");
        assert!(e.contains("per_ip_rat"), "{e}");
        let e = refused("[[upstream]]\nname = \"a\"\nurl = \"http://h\"\nmax_concurrent_requests = 0\n");
        assert!(e.starts_with("upstream[0].max_concurrent_requests: must be at least 1"), "{e}");
    }

    #[test]
    fn cidr_blocks_contain_their_addresses() {
        let ten = net("10.0.0.0/8");
        assert!(ten.contains("10.255.1.2".parse().unwrap()));
        assert!(!ten.contains("11.0.0.1".parse().unwrap()));
        // An IPv4-mapped IPv6 peer (a dual-stack listener) is its IPv4 address.
        assert!(ten.contains("::ffff:10.1.2.3".parse().unwrap()));
        let one = net("192.168.1.7");
        assert!(one.contains("192.168.1.7".parse().unwrap()));
        assert!(!one.contains("192.168.1.8".parse().unwrap()));
        let v6 = net("fd00:1::/32");
        assert!(v6.contains("fd00:1:ffff::1".parse().unwrap()));
        assert!(!v6.contains("fd00:2::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(net("0.0.0.0/0").contains("8.8.8.8".parse().unwrap()));
        assert!(!net("0.0.0.0/0").contains("::1".parse().unwrap()));
        assert!(net("::/0").contains("::1".parse().unwrap()));
    }

    #[test]
    fn malformed_blocks_are_refused() {
        assert!(IpNet::parse("10.0.0.1/8").unwrap_err().contains("host bits"));
        assert!(IpNet::parse("10.0.0.0/33").unwrap_err().contains("0 to 32"));
        assert!(IpNet::parse("proxy.local").is_err());
        assert!(IpNet::parse("10.0.0.0/").is_err());
    }

    #[test]
    fn rates_become_periods_and_zero_is_off() {
        let r = rate("r", 2.0, "b", 5).unwrap().unwrap();
        assert_eq!(r.period, Duration::from_millis(500));
        assert_eq!(r.burst.get(), 5);
        assert_eq!(rate("r", 0.5, "b", 1).unwrap().unwrap().period, Duration::from_secs(2));
        assert_eq!(rate("r", 0.0, "b", 1).unwrap(), None);
    }
}
