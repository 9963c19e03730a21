//! The server's codec: tonic's prost codec, except that a request whose bytes are not the
//! message is the caller's fault, INVALID_ARGUMENT, as the fast path says too
//! ([`decode_request`](super::framing::decode_request)). tonic's codec says INTERNAL, which is
//! right for a reply a client cannot decode (the server is broken), so the generated client
//! keeps it: `build.rs` gives this codec to the server stubs only.

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// The codec of the generated servers.
#[derive(Debug)]
pub(crate) struct RequestCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for RequestCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for RequestCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = RequestDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RequestDecoder(self.0.decoder())
    }
}

/// Decodes request messages: prost's decoder, its failures INVALID_ARGUMENT.
#[derive(Debug)]
pub(crate) struct RequestDecoder<U>(ProstDecoder<U>);

impl<U: Message + Default> Decoder for RequestDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's decoder fails only on bytes that are not the message.
        self.0
            .decode(buf)
            .map_err(|status| Status::invalid_argument(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
