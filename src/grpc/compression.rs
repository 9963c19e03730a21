//! Message compression, gRPC's way: the encodings spoken (`grpc-encoding`,
//! `grpc-accept-encoding`), which one a reply gets and when, and one message compressed on its
//! own (gRPC compresses each message, flagging it in its prefix).
//!
//! Requests are decompressed by tonic (`accept_compressed`); replies are compressed here, after
//! the services, so the decision is made once for every path and the server holds only the
//! compressed bytes of a reply waiting for its client's window.

use std::io::{Read, Write};

use http::HeaderMap;
use tonic::Status;

/// The reply encodings the server speaks, in the order it prefers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Gzip,
    Zstd,
}

/// `grpc-encoding`: how a call's messages flagged compressed are compressed.
pub(crate) const GRPC_ENCODING: http::HeaderName = http::HeaderName::from_static("grpc-encoding");
/// `grpc-accept-encoding`: the encodings a peer can read.
pub(crate) const GRPC_ACCEPT_ENCODING: http::HeaderName =
    http::HeaderName::from_static("grpc-accept-encoding");

/// Messages shorter than this go uncompressed, whatever was agreed: gzip's header and trailer
/// alone are 18 bytes, and a short text rarely shrinks enough to pay for the CPU (a 4-byte
/// reply became 24 bytes of gzip).
pub(crate) const MIN_COMPRESSED_MESSAGE: usize = 1024;

impl Encoding {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Gzip => "gzip",
            Self::Zstd => "zstd",
        }
    }

    /// The encoding `name` names, as a list entry of `grpc-accept-encoding` or HTTP's
    /// `Accept-Encoding` has it (a `;q=` weight ignored).
    pub(crate) fn from_name(name: &str) -> Option<Self> {
        match name.split(';').next().unwrap_or_default().trim() {
            "gzip" => Some(Self::Gzip),
            "zstd" => Some(Self::Zstd),
            _ => None,
        }
    }

    /// `message` compressed, or `None` when that would not make it smaller: the message then
    /// goes uncompressed (flag 0), which every gRPC peer reads in any call.
    pub(crate) fn compress(self, message: &[u8]) -> Option<Vec<u8>> {
        if message.len() < MIN_COMPRESSED_MESSAGE {
            return None;
        }
        let mut out = Vec::with_capacity(message.len() / 4);
        let compressed = match self {
            Self::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(&mut out, flate2::Compression::default());
                encoder
                    .write_all(message)
                    .and_then(|()| encoder.finish().map(drop))
            }
            Self::Zstd => zstd::stream::copy_encode(message, &mut out, 0),
        }
        .map(|_| out);
        compressed.ok().filter(|out| out.len() < message.len())
    }

    /// `data` inflated, refused once past `limit` bytes: a small body can inflate a
    /// thousandfold, so the bound is kept while inflating, not checked after.
    pub(crate) fn decompress(self, data: &[u8], limit: usize) -> Result<Vec<u8>, Status> {
        let mut out = Vec::new();
        let bound = limit as u64 + 1;
        let read = match self {
            Self::Gzip => flate2::read::GzDecoder::new(data)
                .take(bound)
                .read_to_end(&mut out),
            Self::Zstd => zstd::stream::read::Decoder::new(data)
                .and_then(|decoder| decoder.take(bound).read_to_end(&mut out)),
        };
        read.map_err(|error| {
            Status::invalid_argument(format!(
                "the message does not {}-decompress: {error}",
                self.name()
            ))
        })?;
        if out.len() > limit {
            return Err(Status::resource_exhausted(format!(
                "decompressed message over the {limit}-byte limit (--max-message-bytes)"
            )));
        }
        Ok(out)
    }
}

/// When the server compresses replies (`--compress-replies`).
///
/// Stock grpc-go, grpc-core and tonic compress a reply only when the application asks; grpcio
/// and grpc-js list gzip in `grpc-accept-encoding` on every call, so answering that list alone
/// would compress every reply to every such client, unasked, at a third of the speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReplyCompression {
    /// Never: every reply goes uncompressed.
    Never,
    /// When the request itself came compressed, in the same encoding (if the client accepts
    /// it): a client that compresses what it sends wants compression.
    #[default]
    IfRequestCompressed,
    /// Whenever the client accepts an encoding the server speaks: for large replies over slow
    /// links, where bytes cost more than CPU.
    Always,
}

/// The encoding of the reply to a request with `headers` whose `grpc-encoding` is
/// `request_encoding`, under `policy`; `None`: uncompressed. The caller looks the request's
/// encoding up once, for this and for what decompressing it holds.
pub(crate) fn reply_encoding(
    headers: &HeaderMap,
    request_encoding: Option<&http::HeaderValue>,
    policy: ReplyCompression,
) -> Option<Encoding> {
    choose_encoding(
        || headers.get(GRPC_ACCEPT_ENCODING),
        request_encoding,
        policy,
    )
}

/// The reply encoding under `policy` for a client that accepts the list `accepted` gives and
/// sent its request in `request_encoding`; `None`: uncompressed. For gRPC's headers and HTTP's
/// alike. `accepted` is looked up only when needed: most calls come uncompressed, and the
/// lookup of a header name that is not HTTP's own costs 1% of a call.
pub(crate) fn choose_encoding<'a>(
    accepted: impl FnOnce() -> Option<&'a http::HeaderValue>,
    request_encoding: Option<&http::HeaderValue>,
    policy: ReplyCompression,
) -> Option<Encoding> {
    let accepted = || {
        accepted()
            .and_then(|value| value.to_str().ok())
            .into_iter()
            .flat_map(|list| list.split(','))
            .filter_map(Encoding::from_name)
    };
    match policy {
        ReplyCompression::Never => None,
        ReplyCompression::IfRequestCompressed => {
            let sent = Encoding::from_name(request_encoding?.to_str().ok()?)?;
            accepted().any(|encoding| encoding == sent).then_some(sent)
        }
        ReplyCompression::Always => {
            let mut accepted = accepted();
            let first = accepted.next()?;
            // Prefer gzip, which every client that speaks compression has.
            Some(match first {
                Encoding::Gzip => first,
                Encoding::Zstd => accepted.find(|e| *e == Encoding::Gzip).unwrap_or(first),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::test_headers as headers;

    #[test]
    fn grpcio_s_accept_list_alone_asks_for_nothing_by_default() {
        let grpcio = headers(&[("grpc-accept-encoding", "identity,deflate,gzip")]);
        let policy = ReplyCompression::default();
        assert_eq!(reply_encoding(&grpcio, None, policy), None);
        assert_eq!(
            reply_encoding(&grpcio, None, ReplyCompression::Always),
            Some(Encoding::Gzip)
        );
    }

    #[test]
    fn a_compressed_request_gets_its_own_encoding_back_if_accepted() {
        let policy = ReplyCompression::IfRequestCompressed;
        let zstd = headers(&[
            ("grpc-encoding", "zstd"),
            ("grpc-accept-encoding", "gzip, zstd"),
        ]);
        let encoding = |headers: &HeaderMap| headers.get(GRPC_ENCODING).cloned();
        assert_eq!(
            reply_encoding(&zstd, encoding(&zstd).as_ref(), policy),
            Some(Encoding::Zstd)
        );
        let not_accepted = headers(&[("grpc-encoding", "zstd"), ("grpc-accept-encoding", "gzip")]);
        let sent = encoding(&not_accepted);
        assert_eq!(reply_encoding(&not_accepted, sent.as_ref(), policy), None);
        let sent = encoding(&zstd);
        assert_eq!(
            reply_encoding(&zstd, sent.as_ref(), ReplyCompression::Never),
            None
        );
    }

    #[test]
    fn decompression_stops_at_the_limit() {
        let text = "A".repeat(10_000);
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let compressed = encoding.compress(text.as_bytes()).unwrap();
            assert_eq!(
                encoding.decompress(&compressed, 10_000).unwrap(),
                text.as_bytes()
            );
            let over = encoding.decompress(&compressed, 9_999).unwrap_err();
            assert_eq!(over.code(), tonic::Code::ResourceExhausted);
            let broken = encoding
                .decompress(b"not compressed at all", 100)
                .unwrap_err();
            assert_eq!(broken.code(), tonic::Code::InvalidArgument);
        }
        assert_eq!(Encoding::from_name(" gzip;q=0.5"), Some(Encoding::Gzip));
    }

    #[test]
    fn small_or_incompressible_messages_stay_as_they_are() {
        assert_eq!(Encoding::Gzip.compress(b"HELLO,WORLD!"), None);
        let noise: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        assert_eq!(Encoding::Gzip.compress(&noise), None);
        let text = "A".repeat(10_000);
        for encoding in [Encoding::Gzip, Encoding::Zstd] {
            let compressed = encoding.compress(text.as_bytes()).expect("compresses");
            assert!(compressed.len() < 200, "{encoding:?}: {}", compressed.len());
        }
    }
}
