//! The protobuf codec of the generated FormatData stubs (`build.rs` points tonic at it): prost,
//! except that a request that does not decode is the caller's fault.
//!
//! tonic's stock prost codec reports undecodable bytes and non-UTF-8 strings as INTERNAL, which
//! tells the caller the server is broken. They are INVALID_ARGUMENT: the caller sent bad bytes.

use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// prost encoding, with decode failures as INVALID_ARGUMENT.
#[derive(Debug, Clone, Copy)]
pub struct ProstCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for ProstCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for ProstCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProstDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstDecoder(PhantomData)
    }
}

/// Decodes one message, blaming the sender for bytes that are not one.
#[derive(Debug, Clone, Copy)]
pub struct ProstDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for ProstDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's message names the problem: "failed to decode Protobuf message: Data.text:
        // invalid string value: data is not UTF-8 encoded".
        U::decode(buf)
            .map(Some)
            .map_err(|error| Status::invalid_argument(error.to_string()))
    }
}

/// `message` as one uncompressed gRPC frame: flag 0, big-endian length, protobuf bytes. For the
/// paths that write frames themselves (the server's fast path, the bench's raw client).
pub fn frame<M: Message>(message: &M) -> Bytes {
    let length = message.encoded_len();
    let mut framed = BytesMut::with_capacity(5 + length);
    framed.put_u8(0);
    framed.put_u32(length as u32);
    message.encode(&mut framed).expect("capacity reserved");
    framed.freeze()
}
