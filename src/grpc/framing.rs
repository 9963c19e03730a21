//! gRPC message framing for the paths that write frames themselves: the server's fast path and
//! the bench's raw client.
//!
//! The generated stubs use tonic's own prost codec (see `build.rs` for why no codec of ours).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

/// `message` as one uncompressed gRPC frame: flag 0, big-endian length, protobuf bytes.
pub fn frame<M: Message>(message: &M) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(length as u32);
    message.encode(&mut framed).expect("capacity reserved");
    framed.freeze()
}
