//! The client-address key for `ip_hash` stickiness.
//!
//! Clients are grouped by address prefix: every address in a group gets the
//! same key, hence the same backend. nginx's `ip_hash` uses a fixed /24, which
//! puts a whole office (or carrier NAT) on one server; latch defaults to the
//! whole address (/32, /128) and lets the config widen it. An IPv4-mapped IPv6
//! address (`::ffff:a.b.c.d`, what a dual-stack socket reports) is the IPv4
//! client it wraps, so one client keeps one key whichever socket it came in on.
//!
//! A key is 17 bytes: a family tag (4 or 6) then the masked address, zero
//! padded. The tag keeps `10.0.0.0/8` and `a00::/8` from ever colliding.

use std::net::IpAddr;

/// Default IPv4 prefix: each address alone.
pub const DEFAULT_PREFIX_V4: u8 = 32;
/// Default IPv6 prefix: each address alone.
pub const DEFAULT_PREFIX_V6: u8 = 128;

/// `ip` masked to `prefix_v4` or `prefix_v6` bits, tagged with its family.
/// Prefixes longer than the address are taken as the whole address.
pub fn ip_key(ip: IpAddr, prefix_v4: u8, prefix_v6: u8) -> [u8; 17] {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let mut key = [0u8; 17];
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(prefix_v4.min(32));
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            key[0] = 4;
            key[1..5].copy_from_slice(&(u32::from(v4) & mask).to_be_bytes());
        }
        IpAddr::V6(v6) => {
            let bits = u32::from(prefix_v6.min(128));
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            key[0] = 6;
            key[1..].copy_from_slice(&(u128::from(v6) & mask).to_be_bytes());
        }
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(ip: &str, v4: u8, v6: u8) -> [u8; 17] {
        ip_key(ip.parse().unwrap(), v4, v6)
    }

    #[test]
    fn v4_prefixes() {
        assert_eq!(k("10.1.2.3", 24, 128), k("10.1.2.200", 24, 128));
        assert_ne!(k("10.1.2.3", 24, 128), k("10.1.3.1", 24, 128));
        assert_ne!(k("10.1.2.3", 32, 128), k("10.1.2.200", 32, 128));
        assert_eq!(k("10.1.2.3", 0, 128), k("192.168.9.9", 0, 128));
        // Out-of-range prefixes clamp instead of panicking.
        assert_eq!(k("10.1.2.3", 255, 255), k("10.1.2.3", 32, 128));
        let mut want = [0u8; 17];
        want[..5].copy_from_slice(&[4, 10, 1, 2, 0]);
        assert_eq!(k("10.1.2.3", 24, 128), want);
    }

    #[test]
    fn mapped_v6_is_v4() {
        assert_eq!(k("::ffff:10.1.2.3", 32, 128), k("10.1.2.3", 32, 128));
        assert_eq!(k("::ffff:10.1.2.3", 24, 128), k("10.1.2.200", 24, 128));
        // Only the mapped form: the deprecated compatible form stays IPv6.
        assert_ne!(k("::10.1.2.3", 32, 128), k("10.1.2.3", 32, 128));
    }

    #[test]
    fn v6_prefixes() {
        let a = "2001:db8:1:2:aaaa::1";
        let b = "2001:db8:1:2:bbbb::2";
        let c = "2001:db8:1:3::1";
        assert_eq!(k(a, 32, 64), k(b, 32, 64));
        assert_ne!(k(a, 32, 64), k(c, 32, 64));
        assert_ne!(k(a, 32, 128), k(b, 32, 128));
        assert_eq!(k(a, 32, 0), k("::1", 32, 0));
        assert_ne!(k("2001:db8::1", 32, 121), k("2001:db8::81", 32, 121));
        assert_eq!(k("2001:db8::1", 32, 121), k("2001:db8::7f", 32, 121));
    }

    #[test]
    fn families_never_collide() {
        // Same leading bits, different family.
        assert_ne!(k("10.0.0.0", 0, 0), k("a00::", 0, 0));
        assert_ne!(k("10.0.0.0", 8, 8), k("a00::", 8, 8));
        assert_eq!(k("0.0.0.0", 32, 128)[0], 4);
        assert_eq!(k("::", 32, 128)[0], 6);
    }
}
