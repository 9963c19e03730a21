//! Where servers listen and clients call: `HOST:PORT` pairs, kept unresolved, and the client's
//! targets (one server, or every address of a DNS name).
//!
//! Both sides share [`DEFAULT_ADDR`], so the server and its client agree on where to meet
//! without either spelling it out.

use std::fmt;
use std::str::FromStr;

/// Where the server listens and the client calls unless told otherwise: the tutorial's address.
pub const DEFAULT_ADDR: &str = "localhost:8080";

/// Where the client sends its calls: one server, or all the addresses of a DNS name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `HOST:PORT`: one server (a name is resolved when connecting, and the first address that
    /// accepts is used).
    Server(HostPort),
    /// `dns:///HOST:PORT`: a server at every address the name resolves to, as gRPC's `dns`
    /// resolver does; a Kubernetes headless Service resolves to one per ready pod.
    Dns(HostPort),
}

/// gRPC's name-resolution scheme for DNS; `dns://AUTHORITY/` (a chosen DNS server) is not
/// supported, the system resolver is used.
const DNS_SCHEME: &str = "dns:///";

impl FromStr for Target {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.strip_prefix(DNS_SCHEME) {
            Some(name) => Ok(Self::Dns(name.parse()?)),
            None if value.starts_with("dns:") => Err(format!(
                "expected dns:///HOST:PORT (the system resolver; no DNS server authority), got '{value}'"
            )),
            None => Ok(Self::Server(value.parse()?)),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server(addr) => addr.fmt(f),
            Self::Dns(name) => write!(f, "{DNS_SCHEME}{name}"),
        }
    }
}

/// A `HOST:PORT` pair where HOST is a name or an IP address (IPv6 in brackets: `[::1]:8080`).
///
/// Kept unresolved: the server binds every address the name resolves to, and the client lets its
/// connector pick one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Name or IP address, without IPv6 brackets.
    pub host: String,
    /// TCP port; 0 asks the server for any free one.
    pub port: u16,
}

impl FromStr for HostPort {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let (host, port) = value
            .rsplit_once(':')
            .ok_or_else(|| format!("expected HOST:PORT, got '{value}'"))?;
        let host = match host.strip_prefix('[') {
            Some(bracketed) => bracketed
                .strip_suffix(']')
                .ok_or_else(|| format!("unclosed '[' in '{value}'"))?,
            None if host.contains(':') => {
                return Err(format!(
                    "put an IPv6 address in brackets: '[{host}]:{port}'"
                ));
            }
            None => host,
        };
        if host.is_empty() {
            return Err(format!("missing host in '{value}'"));
        }
        let port = port
            .parse()
            .map_err(|_| format!("'{port}' is not a port number (0-65535)"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host_port(value: &str) -> Result<HostPort, String> {
        value.parse()
    }

    #[test]
    fn parses_names_and_addresses() {
        let localhost = host_port("localhost:8080").unwrap();
        assert_eq!(
            (localhost.host.as_str(), localhost.port),
            ("localhost", 8080)
        );
        assert_eq!(host_port("127.0.0.1:0").unwrap().port, 0);
        let v6 = host_port("[::1]:50051").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 50051));
    }

    #[test]
    fn displays_as_it_parses() {
        for value in ["localhost:8080", "127.0.0.1:0", "[::1]:50051"] {
            assert_eq!(host_port(value).unwrap().to_string(), value);
        }
    }

    #[test]
    fn rejects_malformed_addresses() {
        for value in [
            "localhost",
            ":8080",
            "host:http",
            "host:70000",
            "::1:8080",
            "[::1:80",
        ] {
            assert!(host_port(value).is_err(), "{value} should be rejected");
        }
    }

    #[test]
    fn targets_are_servers_or_dns_names() {
        let target = |value: &str| value.parse::<Target>();
        assert_eq!(
            target("localhost:8080").unwrap(),
            Target::Server(host_port("localhost:8080").unwrap())
        );
        assert_eq!(
            target("dns:///formatdata-headless:8080").unwrap(),
            Target::Dns(host_port("formatdata-headless:8080").unwrap())
        );
        for value in ["dns:///[::1]:1", "dns:///a:1", "b:2"] {
            assert_eq!(target(value).unwrap().to_string(), value);
        }
        for bad in ["dns://8.8.8.8/a:1", "dns:a:1", "dns:///a", "dns:///"] {
            assert!(target(bad).is_err(), "{bad} should be rejected");
        }
    }
}
