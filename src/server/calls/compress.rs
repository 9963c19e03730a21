//! Reply compression, after the services: every path (the fast path, tonic's, every service)
//! answers with the encoding `grpc::compression` chose for the call, each message compressed on
//! its own as it leaves. Doing it here rather than in tonic's encoder means the uncompressed
//! message is dropped as soon as it is compressed: what waits for a slow client's window is the
//! compressed bytes alone, which the call holds in its budget.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tonic::Status;
use tonic::body::Body;

use crate::grpc::compression::Encoding;
use crate::grpc::framing::{PREFIX_LEN, Prefix};

/// A reply body whose messages are compressed with `encoding`, each one that gets smaller.
pub(in crate::server) struct CompressedReplies {
    inner: Body,
    encoding: Encoding,
    /// Bytes of a message cut across the inner body's chunks (the services yield whole
    /// messages, so this stays empty in practice).
    partial: BytesMut,
}

impl CompressedReplies {
    pub(in crate::server) fn new(inner: Body, encoding: Encoding) -> Self {
        Self {
            inner,
            encoding,
            partial: BytesMut::new(),
        }
    }

    /// The whole messages at the start of `bytes`, compressed, and how many bytes they took.
    fn compress_messages(&self, bytes: &[u8]) -> (Option<Bytes>, usize) {
        let mut at = 0;
        let mut out: Option<BytesMut> = None;
        while let Some(prefix) = Prefix::read(&bytes[at..]) {
            let end = at + PREFIX_LEN + prefix.length;
            if end > bytes.len() {
                break;
            }
            let message = &bytes[at + PREFIX_LEN..end];
            let compressed = match prefix.flag {
                0 => self.encoding.compress(message),
                _ => None,
            };
            match compressed {
                Some(compressed) => {
                    let out = out.get_or_insert_with(|| {
                        let mut out = BytesMut::with_capacity(PREFIX_LEN + compressed.len());
                        out.extend_from_slice(&bytes[..at]);
                        out
                    });
                    out.put_u8(1);
                    out.put_u32(compressed.len() as u32);
                    out.extend_from_slice(&compressed);
                }
                None => {
                    if let Some(out) = &mut out {
                        out.extend_from_slice(&bytes[at..end]);
                    }
                }
            }
            at = end;
        }
        (out.map(BytesMut::freeze), at)
    }
}

impl HttpBody for CompressedReplies {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        loop {
            let frame = match ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                other => return Poll::Ready(other),
            };
            let mut data = match frame.into_data() {
                Ok(data) => data,
                Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
            };
            if self.partial.is_empty() {
                let (compressed, taken) = self.compress_messages(&data);
                if taken == data.len() {
                    // Only compressed messages are copied; a chunk of small ones goes as it is.
                    return Poll::Ready(Some(Ok(Frame::data(compressed.unwrap_or(data)))));
                }
                // A message continues in the next chunk: keep this one's whole messages.
                let rest = data.split_off(taken);
                self.partial.extend_from_slice(&rest);
                if taken > 0 {
                    let head = compressed.unwrap_or(data);
                    return Poll::Ready(Some(Ok(Frame::data(head))));
                }
                continue;
            }
            self.partial.extend_from_slice(&data);
            let (compressed, taken) = self.compress_messages(&self.partial);
            if taken == 0 {
                continue;
            }
            let whole = self.partial.split_to(taken).freeze();
            return Poll::Ready(Some(Ok(Frame::data(compressed.unwrap_or(whole)))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.partial.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn framed(flag: u8, message: &[u8]) -> Vec<u8> {
        let mut out = vec![flag];
        out.extend_from_slice(&(message.len() as u32).to_be_bytes());
        out.extend_from_slice(message);
        out
    }

    /// The messages of `chunks`, as the body sends them, with their flags.
    async fn sent(chunks: Vec<Vec<u8>>) -> Vec<(u8, Vec<u8>)> {
        let frames = chunks
            .into_iter()
            .map(|chunk| Ok::<_, Status>(Frame::data(Bytes::from(chunk))));
        let inner = Body::new(http_body_util::StreamBody::new(futures_util::stream::iter(
            frames,
        )));
        let body = CompressedReplies::new(inner, Encoding::Gzip);
        let bytes = body.collect().await.unwrap().to_bytes();
        let mut messages = Vec::new();
        let mut rest = &bytes[..];
        while let Some(prefix) = Prefix::read(rest) {
            let message = &rest[PREFIX_LEN..PREFIX_LEN + prefix.length];
            let plain = match prefix.flag {
                1 => {
                    let mut out = Vec::new();
                    std::io::Read::read_to_end(
                        &mut flate2::read::GzDecoder::new(message),
                        &mut out,
                    )
                    .unwrap();
                    out
                }
                _ => message.to_vec(),
            };
            messages.push((prefix.flag, plain));
            rest = &rest[PREFIX_LEN + prefix.length..];
        }
        assert!(rest.is_empty(), "nothing left over");
        messages
    }

    #[tokio::test]
    async fn large_messages_are_compressed_small_ones_left_alone_wherever_chunks_end() {
        let large = "A".repeat(5_000).into_bytes();
        let mut stream = framed(0, b"small");
        stream.extend(framed(0, &large));
        stream.extend(framed(0, b"tiny"));
        for cut in [1, 3, 7, 100, 5_008, stream.len() - 1] {
            let chunks = vec![stream[..cut].to_vec(), stream[cut..].to_vec()];
            let messages = sent(chunks).await;
            assert_eq!(
                messages,
                vec![
                    (0, b"small".to_vec()),
                    (1, large.clone()),
                    (0, b"tiny".to_vec())
                ],
                "cut at {cut}"
            );
        }
    }
}
