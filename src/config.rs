//! Command-line flags of the two binaries, each also readable from a `FORMATDATA_*` variable.
//!
//! Both binaries share [`HostPort`] and [`DEFAULT_ADDR`], so the server and its client agree on
//! where to meet without either spelling it out.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;

/// Where the server listens and the client calls unless told otherwise: the tutorial's address.
pub const DEFAULT_ADDR: &str = "localhost:8080";

/// What the client sends when given no text: the tutorial's greeting.
pub const DEFAULT_TEXT: &str = "hello,world!";

/// Serves `example.FormatData` over gRPC: replies with the text it is sent, uppercased.
#[derive(Debug, Parser)]
#[command(name = "server", version)]
pub struct ServerArgs {
    /// Address to listen on, as HOST:PORT. A host name is served on every address it resolves
    /// to (both 127.0.0.1 and ::1 for localhost); port 0 picks a free port.
    #[arg(long, env = "FORMATDATA_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: HostPort,
}

/// Calls `example.FormatData/DoFormat` and prints the reply as `received: TEXT`.
#[derive(Debug, Parser)]
#[command(name = "client", version)]
pub struct ClientArgs {
    /// Server to call, as HOST:PORT.
    #[arg(long, env = "FORMATDATA_ADDR", default_value = DEFAULT_ADDR)]
    pub addr: HostPort,

    /// Seconds to wait for the connection, and then for the reply.
    #[arg(long, env = "FORMATDATA_TIMEOUT", default_value = "10", value_parser = parse_seconds)]
    pub timeout: Duration,

    /// Text to send; several words are joined by single spaces.
    #[arg(default_value = DEFAULT_TEXT, trailing_var_arg = true, allow_hyphen_values = true)]
    pub text: Vec<String>,
}

impl ClientArgs {
    /// The text to send, as one string.
    pub fn text(&self) -> String {
        self.text.join(" ")
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

fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|secs| *secs > 0.0)
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("'{value}' is not a positive number of seconds"))
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
    fn client_defaults_to_the_tutorial() {
        let args = ClientArgs::try_parse_from(["client"]).unwrap();
        assert_eq!(args.addr.to_string(), DEFAULT_ADDR);
        assert_eq!(args.text(), DEFAULT_TEXT);
        assert_eq!(args.timeout, Duration::from_secs(10));
    }

    #[test]
    fn client_joins_words_with_spaces() {
        let args = ClientArgs::try_parse_from(["client", "ß", "-x", "straße"]).unwrap();
        assert_eq!(args.text(), "ß -x straße");
    }

    #[test]
    fn rejects_bad_timeouts() {
        for value in ["0", "-1", "soon", "NaN"] {
            assert!(ClientArgs::try_parse_from(["client", "--timeout", value]).is_err());
        }
    }

    #[test]
    fn clap_definitions_are_consistent() {
        use clap::CommandFactory;
        ServerArgs::command().debug_assert();
        ClientArgs::command().debug_assert();
    }
}
