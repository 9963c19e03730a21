//! How a gRPC call's status travels: `grpc-status` and `grpc-message` in the trailers, or in the
//! headers of a "trailers-only" reply when the call ends before any message; and the names of
//! the codes.

use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderName, HeaderValue, Response};
use percent_encoding::percent_decode;
use tonic::body::Body;
use tonic::{Code, Status};

// Header names as constants: looking up a `&str` parses and validates it on every call, which
// showed in profiles of the per-call path.
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// A trailers-only reply carrying `status`.
pub(crate) fn status_response(status: &Status) -> Response<Body> {
    let mut response = Response::new(Body::default());
    response
        .headers_mut()
        .insert(CONTENT_TYPE, super::GRPC_CONTENT_TYPE);
    set_status_headers(response.headers_mut(), status);
    response
}

/// The trailers of a call that succeeded, built without tonic's encoder: the hot path's.
pub(crate) fn ok_trailers() -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(1);
    trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
    trailers
}

/// Trailers carrying `status`.
pub(crate) fn status_trailers(status: &Status) -> HeaderMap {
    let mut trailers = HeaderMap::with_capacity(2);
    set_status_headers(&mut trailers, status);
    trailers
}

/// Longest `grpc-message` the server sends, in bytes before percent-encoding. Messages may echo
/// what the client sent (a reflection symbol, a content type); careful clients refuse trailers
/// of a megabyte, and an echo of a few hundred bytes says all there is to say.
pub(crate) const MAX_STATUS_MESSAGE: usize = 512;

/// `message`, cut to [`MAX_STATUS_MESSAGE`] bytes (at a character boundary) with a note of how
/// much was left out.
pub(crate) fn bounded_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_STATUS_MESSAGE {
        return message.into();
    }
    let mut end = MAX_STATUS_MESSAGE - 32;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes cut)", &message[..end], message.len() - end).into()
}

/// Sets `grpc-status` and `grpc-message` (percent-encoded, at most [`MAX_STATUS_MESSAGE`]
/// bytes) for `status`.
pub(crate) fn set_status_headers(headers: &mut HeaderMap, status: &Status) {
    // tonic's own encoder (percent-encoding the message) keeps the two in agreement.
    let encoded = Status::new(status.code(), bounded_message(status.message()))
        .into_http::<()>()
        .into_parts()
        .0
        .headers;
    headers.remove(&GRPC_MESSAGE);
    for name in [GRPC_STATUS, GRPC_MESSAGE] {
        if let Some(value) = encoded.get(&name) {
            headers.insert(name, value.clone());
        }
    }
}

/// The call's status in `headers` (a reply's headers or trailers), if they carry one: OK is
/// read at a glance, as nearly every reply's is, where tonic's parser copies the whole map for
/// the status's metadata; any other status goes to tonic's parser, message and details.
pub(crate) fn reply_status(headers: &HeaderMap) -> Option<Status> {
    if headers.get(&GRPC_STATUS)? == "0" {
        return Some(Status::ok(""));
    }
    Status::from_header_map(headers)
}

/// Reads the call's status from `headers` (response headers or trailers). Its code is never
/// changed: the statuses tonic would give what a client sent wrong are made where that is found
/// (the request body's framing checks, the server codec). Two things are put right, keeping the
/// code: UNIMPLEMENTED with no message (tonic's router has no such method) gets the method
/// named, and a message over [`MAX_STATUS_MESSAGE`] is cut there.
pub(crate) fn standard_status(headers: &mut HeaderMap, method: &str) -> Option<Status> {
    let code = Code::from_bytes(headers.get(&GRPC_STATUS)?.as_bytes());
    if code == Code::Ok {
        // The common case, and nothing to rewrite.
        return Some(Status::ok(""));
    }
    let message = headers
        .get(&GRPC_MESSAGE)
        .map(|value| {
            percent_decode(value.as_bytes())
                .decode_utf8_lossy()
                .into_owned()
        })
        .unwrap_or_default();
    let status = match code {
        Code::Unimplemented if message.is_empty() => {
            Status::unimplemented(format!("unknown method {method}"))
        }
        _ if message.len() > MAX_STATUS_MESSAGE => {
            Status::new(code, bounded_message(&message).into_owned())
        }
        _ => return Some(Status::new(code, message)),
    };
    set_status_headers(headers, &status);
    Some(status)
}

/// Each code's name as the gRPC docs, grpcio and our client print it, and as grpc-go prints it
/// (`codes.Code.String()`, what go-grpc-prometheus puts in its `grpc_code` label).
const NAMES: [(Code, &str, &str); 17] = [
    (Code::Ok, "OK", "OK"),
    (Code::Cancelled, "CANCELLED", "Canceled"),
    (Code::Unknown, "UNKNOWN", "Unknown"),
    (Code::InvalidArgument, "INVALID_ARGUMENT", "InvalidArgument"),
    (
        Code::DeadlineExceeded,
        "DEADLINE_EXCEEDED",
        "DeadlineExceeded",
    ),
    (Code::NotFound, "NOT_FOUND", "NotFound"),
    (Code::AlreadyExists, "ALREADY_EXISTS", "AlreadyExists"),
    (
        Code::PermissionDenied,
        "PERMISSION_DENIED",
        "PermissionDenied",
    ),
    (
        Code::ResourceExhausted,
        "RESOURCE_EXHAUSTED",
        "ResourceExhausted",
    ),
    (
        Code::FailedPrecondition,
        "FAILED_PRECONDITION",
        "FailedPrecondition",
    ),
    (Code::Aborted, "ABORTED", "Aborted"),
    (Code::OutOfRange, "OUT_OF_RANGE", "OutOfRange"),
    (Code::Unimplemented, "UNIMPLEMENTED", "Unimplemented"),
    (Code::Internal, "INTERNAL", "Internal"),
    (Code::Unavailable, "UNAVAILABLE", "Unavailable"),
    (Code::DataLoss, "DATA_LOSS", "DataLoss"),
    (Code::Unauthenticated, "UNAUTHENTICATED", "Unauthenticated"),
];

/// The canonical name of a code: `RESOURCE_EXHAUSTED`.
pub(crate) fn code_name(code: Code) -> &'static str {
    NAMES[code as usize].1
}

/// A code's name as grpc-go prints it: `ResourceExhausted`.
pub(crate) fn go_code_name(code: Code) -> &'static str {
    NAMES[code as usize].2
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::test_headers as headers;

    #[test]
    fn codes_pass_unchanged_and_an_unknown_method_is_named() {
        for (code, message) in [("13", "boom"), ("11", "past%20the%20end")] {
            let mut trailers = headers(&[("grpc-status", code), ("grpc-message", message)]);
            let status = standard_status(&mut trailers, "/m").unwrap();
            assert_eq!(status.code(), Code::from_bytes(code.as_bytes()));
            assert_eq!(trailers["grpc-status"], code);
        }

        let mut unknown = headers(&[("grpc-status", "12")]);
        let status = standard_status(&mut unknown, "/x.Y/Z").unwrap();
        assert_eq!(status.message(), "unknown method /x.Y/Z");

        let mut ok = headers(&[("grpc-status", "0")]);
        assert_eq!(standard_status(&mut ok, "/m").unwrap().code(), Code::Ok);
        assert!(standard_status(&mut HeaderMap::new(), "/m").is_none());
    }

    #[test]
    fn a_long_message_is_cut_wherever_it_comes_from() {
        let echo = format!("symbol not found: {}", "é".repeat(100_000));
        let status = Status::not_found(echo.clone());
        let trailers = status_trailers(&status);
        assert!(trailers["grpc-message"].len() < 3 * MAX_STATUS_MESSAGE);

        let mut from_tonic = status_trailers(&Status::ok(""));
        from_tonic.insert("grpc-status", HeaderValue::from_static("5"));
        let long = percent_encoding::utf8_percent_encode(&echo, percent_encoding::NON_ALPHANUMERIC);
        from_tonic.insert("grpc-message", long.to_string().parse().unwrap());
        let read = standard_status(&mut from_tonic, "/m").unwrap();
        assert!(
            read.message().len() <= MAX_STATUS_MESSAGE,
            "{}",
            read.message().len()
        );
        assert!(read.message().ends_with("bytes cut)"), "{}", read.message());
        assert!(from_tonic["grpc-message"].len() < 3 * MAX_STATUS_MESSAGE);
    }

    #[test]
    fn every_code_has_its_names_in_order() {
        for (number, (code, _, _)) in NAMES.iter().enumerate() {
            assert_eq!(*code as usize, number);
        }
        assert_eq!(code_name(Code::Cancelled), "CANCELLED");
        assert_eq!(go_code_name(Code::Cancelled), "Canceled");
    }

    #[test]
    fn a_status_round_trips_through_its_headers() {
        let status = Status::invalid_argument("naïve 100%");
        let mut trailers = status_trailers(&status);
        let read = standard_status(&mut trailers, "/m").unwrap();
        assert_eq!(
            (read.code(), read.message()),
            (status.code(), status.message())
        );
    }
}
