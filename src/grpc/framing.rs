//! Length-prefixed messages, gRPC's framing over HTTP/2 DATA: each message is a compression flag
//! (one byte), a big-endian length (four) and that many bytes of protobuf. The only place that
//! knows it: the fast path, the call middleware, the metrics and the bench's raw client all go
//! through here.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Status;

/// Bytes before each message: the compression flag and the length.
pub(crate) const PREFIX_LEN: usize = 5;

/// `message` as one uncompressed frame.
pub(crate) fn frame<M: Message>(message: &M) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(PREFIX_LEN + length);
    framed.put_u8(0);
    framed.put_u32(length as u32);
    message.encode(&mut framed).expect("capacity reserved");
    framed.freeze()
}

/// A message's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prefix {
    /// 0 uncompressed, 1 compressed with the call's `grpc-encoding`; anything else is invalid.
    pub flag: u8,
    /// Bytes of message that follow.
    pub length: usize,
}

impl Prefix {
    /// The prefix at the start of `bytes`, once they hold one.
    pub(crate) fn read(bytes: &[u8]) -> Option<Self> {
        let prefix: &[u8; PREFIX_LEN] = bytes.get(..PREFIX_LEN)?.try_into().ok()?;
        Some(Self {
            flag: prefix[0],
            length: u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize,
        })
    }
}

/// A request message's bytes decoded, or INVALID_ARGUMENT with prost's account of what is wrong
/// ("failed to decode Protobuf message: Data.text: invalid string value: data is not UTF-8
/// encoded"): the caller sent bytes that are not the message.
pub(crate) fn decode_request<M: Message + Default>(bytes: Bytes) -> Result<M, Status> {
    M::decode(bytes).map_err(|error| Status::invalid_argument(error.to_string()))
}

/// Follows the framing of a byte stream that arrives in pieces (prefixes may straddle HTTP/2
/// DATA frames): counts the messages, and knows how much of the one in progress has arrived.
#[derive(Debug, Default)]
pub(crate) struct Framing {
    prefix: [u8; PREFIX_LEN],
    prefix_read: usize,
    /// Declared length of the message whose body is arriving.
    length: usize,
    remaining: usize,
    /// Messages whose first byte has been seen.
    begun: u64,
    /// Messages seen whole.
    complete: u64,
    /// The largest whole message so far, prefix included.
    largest: usize,
}

impl Framing {
    /// Whether the bytes fed so far stop inside a message (its prefix or its body).
    pub(crate) fn mid_message(&self) -> bool {
        self.prefix_read > 0 || self.remaining > 0
    }

    /// Messages begun so far: whole ones, and one whose prefix has started.
    pub(crate) fn begun(&self) -> u64 {
        self.begun
    }

    /// Messages seen whole.
    pub(crate) fn complete(&self) -> u64 {
        self.complete
    }

    /// Bytes of the message in progress seen so far, prefix included; 0 between messages.
    pub(crate) fn partial(&self) -> usize {
        match self.remaining {
            0 => self.prefix_read,
            remaining => PREFIX_LEN + self.length - remaining,
        }
    }

    /// The largest whole message seen, prefix included.
    pub(crate) fn largest(&self) -> usize {
        self.largest
    }

    /// Feeds the next bytes; returns how many messages began in them.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> u64 {
        let mut messages = 0;
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skipped = self.remaining.min(bytes.len());
                self.remaining -= skipped;
                bytes = &bytes[skipped..];
                if self.remaining == 0 {
                    self.completed();
                }
                continue;
            }
            if self.prefix_read == 0 {
                self.begun += 1;
            }
            let taken = (PREFIX_LEN - self.prefix_read).min(bytes.len());
            self.prefix[self.prefix_read..self.prefix_read + taken]
                .copy_from_slice(&bytes[..taken]);
            self.prefix_read += taken;
            bytes = &bytes[taken..];
            if self.prefix_read == PREFIX_LEN {
                messages += 1;
                self.length = Prefix::read(&self.prefix).expect("whole").length;
                self.remaining = self.length;
                self.prefix_read = 0;
                if self.remaining == 0 {
                    self.completed();
                }
            }
        }
        messages
    }

    fn completed(&mut self) {
        self.complete += 1;
        self.largest = self.largest.max(PREFIX_LEN + self.length);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_across_chunk_boundaries() {
        let mut stream = Vec::new();
        for message in [&b"hello"[..], b"", b"a longer message"] {
            stream.push(0);
            stream.extend_from_slice(&(message.len() as u32).to_be_bytes());
            stream.extend_from_slice(message);
        }
        for chunk_size in 1..stream.len() {
            let mut framing = Framing::default();
            let total: u64 = stream
                .chunks(chunk_size)
                .map(|chunk| framing.feed(chunk))
                .sum();
            assert_eq!(total, 3, "chunks of {chunk_size}");
            assert_eq!(framing.complete(), 3);
            assert_eq!(framing.largest(), PREFIX_LEN + 16);
            assert_eq!(framing.partial(), 0);
        }
    }

    #[test]
    fn knows_how_much_of_the_message_in_progress_arrived() {
        let mut framing = Framing::default();
        framing.feed(&[0, 0, 0]);
        assert_eq!((framing.partial(), framing.complete()), (3, 0));
        framing.feed(&[0, 10, b'a', b'b']);
        assert_eq!((framing.partial(), framing.complete()), (7, 0));
        framing.feed(&[b'c'; 8]);
        assert_eq!((framing.partial(), framing.complete()), (0, 1));
        assert_eq!(framing.largest(), 15);
    }

    #[test]
    fn a_frame_reads_back_as_its_prefix_and_message() {
        let framed = frame(&crate::pb::Data { text: "hi".into() });
        let prefix = Prefix::read(&framed).unwrap();
        assert_eq!(prefix.flag, 0);
        assert_eq!(prefix.length, framed.len() - PREFIX_LEN);
        let data: crate::pb::Data = decode_request(framed.slice(PREFIX_LEN..)).unwrap();
        assert_eq!(data.text, "hi");
        assert_eq!(Prefix::read(&framed[..4]), None);
    }
}
