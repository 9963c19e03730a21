//! The gRPC wire rules, in one place for both sides: how messages are framed ([`framing`]), how
//! a call's status travels and what its codes are called ([`status`]), which methods exist and
//! of what kind ([`methods`], derived from the compiled descriptors), and what a gRPC request
//! looks like.

pub(crate) mod compression;
pub(crate) mod framing;
pub(crate) mod methods;
pub(crate) mod status;

use http::HeaderMap;
use http::header::CONTENT_TYPE;

/// gRPC is `application/grpc`, optionally with a `+proto`-style suffix or parameters.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .strip_prefix("application/grpc")
                .is_some_and(|rest| rest.is_empty() || rest.starts_with(['+', ';']))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let is = |value| {
            let mut headers = HeaderMap::new();
            headers.insert(CONTENT_TYPE, http::HeaderValue::from_static(value));
            is_grpc(&headers)
        };
        assert!(is("application/grpc"));
        assert!(is("application/grpc+proto"));
        assert!(is("application/grpc;charset=utf-8"));
        assert!(!is("application/grpcx"));
        assert!(!is("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
