//! The gRPC wire rules, in one place for both sides: how messages are framed ([`framing`]) and
//! decoded ([`codec`]), how
//! a call's status travels and what its codes are called ([`status`]), which methods exist and
//! of what kind ([`methods`], derived from the compiled descriptors), and what a gRPC request
//! looks like.

pub(crate) mod codec;
pub(crate) mod compression;
pub(crate) mod framing;
pub(crate) mod methods;
pub(crate) mod status;
pub(crate) mod timeout;

use http::{HeaderMap, HeaderValue};

/// Largest request metadata (the HTTP/2 header list: every header and pseudo-header, each
/// counted as its name and value plus 32 bytes, as SETTINGS_MAX_HEADER_LIST_SIZE counts it),
/// grpc-go's and hyper's default. Over it, a call is RESOURCE_EXHAUSTED with a message, as
/// grpc-core answers its soft limit; HTTP/2 itself refuses twice as much with a bare 431.
pub(crate) const MAX_METADATA_BYTES: usize = 16 * 1024;

/// The size of a request's metadata as HTTP/2 counts it, to compare with
/// [`MAX_METADATA_BYTES`].
pub(crate) fn metadata_size<B>(request: &http::Request<B>) -> usize {
    const ENTRY_OVERHEAD: usize = 32;
    let uri = request.uri();
    let pseudo = [
        ":method".len() + request.method().as_str().len(),
        ":scheme".len() + uri.scheme_str().map_or(4, str::len),
        ":authority".len()
            + uri
                .authority()
                .map_or(0, |authority| authority.as_str().len()),
        ":path".len() + uri.path_and_query().map_or(1, |path| path.as_str().len()),
    ];
    let pseudo: usize = pseudo.iter().map(|entry| entry + ENTRY_OVERHEAD).sum();
    request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + ENTRY_OVERHEAD)
        .sum::<usize>()
        + pseudo
}

/// The content type of gRPC requests and replies.
pub(crate) const GRPC_CONTENT_TYPE: HeaderValue = HeaderValue::from_static("application/grpc");

/// Which of gRPC's content types a request has, at a glance: `application/grpc...`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// gRPC-Web's: `application/grpc-web`, `-web+proto`, `-web-text`, ...
    GrpcWeb,
    /// gRPC's own, in any codec (which [`is_grpc`] then checks).
    Grpc,
    /// Anything else.
    Other,
}

impl Family {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .map_or(&b""[..], HeaderValue::as_bytes);
        match content_type.strip_prefix(b"application/grpc") {
            Some(rest) if rest.starts_with(b"-web") => Self::GrpcWeb,
            Some(_) => Self::Grpc,
            None => Self::Other,
        }
    }
}

/// gRPC with protobuf messages: `application/grpc` or `application/grpc+proto`, optionally
/// with parameters. Another codec (`application/grpc+json`) is not served: its body would be
/// taken for protobuf.
pub(crate) fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("application/grpc"))
        .map(|rest| rest.strip_prefix("+proto").unwrap_or(rest))
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(';'))
}

/// A header map of `pairs`, for tests.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(name, value)| {
            (
                http::HeaderName::from_static(name),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types() {
        let is = |value| is_grpc(&test_headers(&[("content-type", value)]));
        assert!(is("application/grpc"));
        assert!(is("application/grpc+proto"));
        assert!(is("application/grpc;charset=utf-8"));
        assert!(!is("application/grpcx"));
        assert!(!is("application/grpc+json"));
        assert!(is("application/grpc+proto;charset=utf-8"));
        assert!(!is("application/json"));
        assert!(!is_grpc(&HeaderMap::new()));
    }
}
