//! Length-prefixed messages, gRPC's framing over HTTP/2 DATA: each message is a compression flag
//! (one byte), a big-endian length (four) and that many bytes of protobuf. The only place that
//! knows it: the fast path, the call middleware, the metrics, Connect's envelopes and the bench's
//! raw client all go through here.

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Status;

/// Bytes before each message: the compression flag and the length.
pub(crate) const PREFIX_LEN: usize = 5;

/// `message`, already encoded, as one uncompressed frame.
pub(crate) fn frame_encoded(message: &[u8]) -> Bytes {
    frame_flagged(0, message)
}

/// `message` behind a prefix with `flag`: Connect's envelopes use the same prefix, with a flag
/// of their own for the end of a stream.
pub(crate) fn frame_flagged(flag: u8, message: &[u8]) -> Bytes {
    let mut framed = BytesMut::with_capacity(PREFIX_LEN + message.len());
    framed.put_u8(flag);
    framed.put_u32(message.len() as u32);
    framed.put_slice(message);
    framed.freeze()
}

/// The first message in `buffer` and its prefix, taken out of it, once it is whole.
pub(crate) fn take_message(buffer: &mut BytesMut) -> Option<(Prefix, Bytes)> {
    let prefix = Prefix::read(buffer)?;
    if buffer.len() < PREFIX_LEN + prefix.length {
        return None;
    }
    let mut message = buffer.split_to(PREFIX_LEN + prefix.length);
    Some((prefix, message.split_off(PREFIX_LEN).freeze()))
}

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

/// What a request's message prefixes may say: how long a message may be, and whether the call
/// named a `grpc-encoding` its messages may be compressed with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Admission {
    pub limit: usize,
    pub encoded: bool,
}

impl Admission {
    /// Anything well formed: for bytes this process wrote itself.
    const ANY: Self = Self {
        limit: usize::MAX,
        encoded: true,
    };
}

impl Prefix {
    /// Whether a message with this prefix may be read: a valid flag, compressed only if the
    /// call has an encoding, and within the limit; checked before the message is buffered. The
    /// flag before the length, so a bad flag is blamed whatever length follows.
    pub(crate) fn admit(self, admission: Admission) -> Result<(), Status> {
        match self.flag {
            0 => {}
            1 if admission.encoded => {}
            1 => {
                return Err(Status::invalid_argument(
                    "message flagged compressed, but no grpc-encoding was given",
                ));
            }
            flag => {
                return Err(Status::invalid_argument(format!(
                    "invalid compression flag {flag} (0 and 1 are valid)"
                )));
            }
        }
        if self.length > admission.limit {
            return Err(Status::resource_exhausted(format!(
                "request message of {} bytes is over the {}-byte limit",
                self.length, admission.limit
            )));
        }
        Ok(())
    }

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

/// A message prefix that was not admitted: why, and how many of the bytes fed before it
/// belong to the messages before it (which may still be read).
#[derive(Debug)]
pub(crate) struct Refused {
    pub whole: usize,
    pub status: Status,
}

/// The status of a call that takes one message and was sent none.
pub(crate) fn missing_message() -> Status {
    Status::invalid_argument("missing request message")
}

/// Follows the framing of a byte stream that arrives in pieces (prefixes may straddle HTTP/2
/// DATA frames): counts the messages, knows how much of the one in progress has arrived, and
/// refuses a prefix its [`Admission`] does not admit.
#[derive(Debug)]
pub(crate) struct Framing {
    admission: Admission,
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

impl Default for Framing {
    fn default() -> Self {
        Self::admitting(Admission::ANY)
    }
}

impl Framing {
    pub(crate) fn admitting(admission: Admission) -> Self {
        Self {
            admission,
            prefix: [0; PREFIX_LEN],
            prefix_read: 0,
            length: 0,
            remaining: 0,
            begun: 0,
            complete: 0,
            largest: 0,
        }
    }

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

    /// Feeds the next bytes; returns how many messages began in them, or why a prefix in them
    /// is refused.
    pub(crate) fn feed(&mut self, mut bytes: &[u8]) -> Result<u64, Refused> {
        let fed = bytes.len();
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
            // Where the message whose prefix this is began in these bytes (0: before them).
            let message_start = match self.prefix_read {
                0 => fed - bytes.len(),
                _ => 0,
            };
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
                let prefix = Prefix::read(&self.prefix).expect("whole");
                prefix.admit(self.admission).map_err(|status| Refused {
                    whole: message_start,
                    status,
                })?;
                self.length = prefix.length;
                self.remaining = self.length;
                self.prefix_read = 0;
                if self.remaining == 0 {
                    self.completed();
                }
            }
        }
        Ok(messages)
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
    fn messages_are_taken_out_once_whole() {
        let mut buffer = BytesMut::from(&[&frame_flagged(2, b"end")[..], b"\x00\x00"].concat()[..]);
        let (prefix, message) = take_message(&mut buffer).unwrap();
        assert_eq!((prefix.flag, &message[..]), (2, &b"end"[..]));
        assert_eq!(take_message(&mut buffer), None);
        assert_eq!(&buffer[..], b"\x00\x00");
    }

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
                .map(|chunk| framing.feed(chunk).unwrap())
                .sum();
            assert_eq!(total, 3, "chunks of {chunk_size}");
            assert_eq!(framing.complete(), 3);
            assert_eq!(framing.largest(), PREFIX_LEN + 16);
            assert_eq!(framing.partial(), 0);
        }
    }

    #[test]
    fn refuses_a_prefix_it_does_not_admit_before_its_message() {
        let admission = Admission {
            limit: 10,
            encoded: false,
        };
        let refused = |bytes: &[u8]| {
            Framing::admitting(admission)
                .feed(bytes)
                .unwrap_err()
                .status
        };
        // A bad flag is blamed whatever length follows.
        for (prefix, code) in [
            ([2, 0, 0, 0, 1], tonic::Code::InvalidArgument),
            ([1, 0, 0, 0, 1], tonic::Code::InvalidArgument),
            ([0, 0, 0, 0, 11], tonic::Code::ResourceExhausted),
            ([7, 255, 255, 255, 255], tonic::Code::InvalidArgument),
        ] {
            assert_eq!(refused(&prefix).code(), code, "{prefix:?}");
        }
        let mut encoded = Framing::admitting(Admission {
            encoded: true,
            ..admission
        });
        assert_eq!(encoded.feed(&[1, 0, 0, 0, 10]).unwrap(), 1);
        // The messages before a refused one can still be read.
        let mut stream = Framing::admitting(admission);
        let refused = stream
            .feed(&[0, 0, 0, 0, 2, b'o', b'k', 0, 0, 0, 0, 11])
            .unwrap_err();
        assert_eq!(
            (refused.whole, refused.status.code()),
            (7, tonic::Code::ResourceExhausted)
        );
    }

    #[test]
    fn knows_how_much_of_the_message_in_progress_arrived() {
        let mut framing = Framing::default();
        framing.feed(&[0, 0, 0]).unwrap();
        assert_eq!((framing.partial(), framing.complete()), (3, 0));
        framing.feed(&[0, 10, b'a', b'b']).unwrap();
        assert_eq!((framing.partial(), framing.complete()), (7, 0));
        framing.feed(&[b'c'; 8]).unwrap();
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
