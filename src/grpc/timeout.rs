//! `grpc-timeout`, the caller's deadline, both ways: read by the server (`server/deadline.rs`),
//! written by the load generator's raw client. Up to 8 digits and a unit: H, M, S, m, u, n.

use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use tonic::Status;

pub(crate) const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// The largest amount the header may carry.
const MAX_AMOUNT: u128 = 99_999_999;

/// The caller's deadline from `headers`, if it sent one; INVALID_ARGUMENT if malformed.
pub(crate) fn read(headers: &HeaderMap) -> Result<Option<Duration>, Status> {
    let Some(value) = headers.get(GRPC_TIMEOUT) else {
        return Ok(None);
    };
    let invalid = || Status::invalid_argument(format!("malformed grpc-timeout {value:?}"));
    let text = value.to_str().map_err(|_| invalid())?;
    if text.len() < 2 || text.len() > 9 {
        return Err(invalid());
    }
    let (amount, unit) = text.split_at(text.len() - 1);
    let amount: u64 = amount.parse().map_err(|_| invalid())?;
    let duration = match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return Err(invalid()),
    };
    Ok(Some(duration))
}

/// `timeout` as the header's value, in milliseconds (at least 1, at most 8 digits). Written by
/// the load generator's raw client and for Connect calls (tonic's channel writes its own).
pub(crate) fn write(timeout: Duration) -> HeaderValue {
    let millis = timeout.as_millis().clamp(1, MAX_AMOUNT);
    HeaderValue::from_str(&format!("{millis}m")).expect("digits and a unit")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn timeout(value: &'static str) -> Result<Option<Duration>, Status> {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_TIMEOUT, HeaderValue::from_static(value));
        read(&headers)
    }

    #[test]
    fn every_unit_is_read() {
        assert_eq!(timeout("1H").unwrap(), Some(Duration::from_secs(3600)));
        assert_eq!(timeout("2M").unwrap(), Some(Duration::from_secs(120)));
        assert_eq!(timeout("3S").unwrap(), Some(Duration::from_secs(3)));
        assert_eq!(timeout("250m").unwrap(), Some(Duration::from_millis(250)));
        assert_eq!(
            timeout("99999999u").unwrap(),
            Some(Duration::from_micros(99_999_999))
        );
        assert_eq!(timeout("5n").unwrap(), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "1x", "-1S", "123456789S"] {
            assert_eq!(
                timeout(bad).unwrap_err().code(),
                Code::InvalidArgument,
                "{bad:?}"
            );
        }
        assert_eq!(read(&HeaderMap::new()).unwrap(), None);
    }

    #[test]
    fn what_is_written_reads_back() {
        for (timeout, written) in [
            (Duration::from_millis(250), "250m"),
            (Duration::ZERO, "1m"),
            (Duration::from_secs(10 * 86_400), "99999999m"),
        ] {
            let value = write(timeout);
            assert_eq!(value, written);
            let mut headers = HeaderMap::new();
            headers.insert(GRPC_TIMEOUT, value);
            assert!(read(&headers).unwrap().is_some());
        }
    }
}
