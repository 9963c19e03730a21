//! The methods Connect calls name, and their messages in protobuf's canonical JSON mapping:
//! both from the descriptors compiled into the binary (prost-reflect), for every service the
//! server runs, so a new RPC speaks JSON with no code of its own.

use std::sync::OnceLock;

use bytes::Bytes;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor, MethodDescriptor};
use prost_types::method_options::IdempotencyLevel;
use tonic::Status;

use crate::grpc::methods;

/// The descriptor of the method at `path`, if the server serves it.
pub(super) fn method(path: &str) -> Option<MethodDescriptor> {
    let method = methods::served().find(path)?;
    pool()
        .get_service_by_name(&method.service)?
        .methods()
        .find(|candidate| candidate.name() == method.name)
}

/// Whether `method` is marked `idempotency_level = NO_SIDE_EFFECTS`: Connect may GET it.
pub(super) fn free_of_side_effects(method: &MethodDescriptor) -> bool {
    method
        .method_descriptor_proto()
        .options
        .as_ref()
        .is_some_and(|options| options.idempotency_level() == IdempotencyLevel::NoSideEffects)
}

/// `json`, a message of type `message` in canonical JSON, encoded as protobuf. serde_json
/// refuses nesting past 128 levels, so no body can make the parser recurse without bound.
pub(super) fn json_to_proto(message: &MessageDescriptor, json: &[u8]) -> Result<Bytes, Status> {
    let mut deserializer = serde_json::Deserializer::from_slice(json);
    let decoded = DynamicMessage::deserialize(message.clone(), &mut deserializer)
        .and_then(|decoded| deserializer.end().map(|()| decoded))
        .map_err(|error| {
            Status::invalid_argument(format!(
                "the request is not a JSON {}: {error}",
                message.full_name()
            ))
        })?;
    Ok(decoded.encode_to_vec().into())
}

/// `bytes`, a protobuf message of type `message`, in canonical JSON.
pub(super) fn proto_to_json(message: &MessageDescriptor, bytes: Bytes) -> Result<Bytes, Status> {
    let decoded = DynamicMessage::decode(message.clone(), bytes)
        .map_err(|error| Status::internal(format!("the reply does not decode: {error}")))?;
    serde_json::to_vec(&decoded)
        .map(Bytes::from)
        .map_err(|error| Status::internal(format!("the reply has no JSON form: {error}")))
}

/// Every message and service the server speaks JSON for: ours, health and reflection.
fn pool() -> &'static DescriptorPool {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut pool = DescriptorPool::new();
        for set in methods::REFLECTED.iter().chain(methods::REFLECTION) {
            pool.decode_file_descriptor_set(*set)
                .expect("the descriptors built into the binary decode");
        }
        pool
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb;

    #[test]
    fn every_served_method_has_a_descriptor() {
        for served in methods::served().iter() {
            assert!(method(&served.path).is_some(), "{}", served.path);
        }
        assert!(method("/example.FormatData/Nope").is_none());
    }

    #[test]
    fn do_format_alone_is_free_of_side_effects() {
        assert!(free_of_side_effects(
            &method("/example.FormatData/DoFormat").unwrap()
        ));
        assert!(!free_of_side_effects(
            &method("/example.FormatData/DoFormatStream").unwrap()
        ));
    }

    #[test]
    fn json_goes_to_protobuf_and_back() {
        let data = method("/example.FormatData/DoFormat").unwrap().input();
        let bytes = json_to_proto(&data, br#"{"text":"hi \u00df"}"#).unwrap();
        assert_eq!(pb::Data::decode(bytes.clone()).unwrap().text, "hi ß");
        let json = proto_to_json(&data, bytes).unwrap();
        assert_eq!(std::str::from_utf8(&json).unwrap(), r#"{"text":"hi ß"}"#);
        let bad = json_to_proto(&data, br#"{"text":1}"#).unwrap_err();
        assert_eq!(bad.code(), tonic::Code::InvalidArgument);
        assert!(json_to_proto(&data, br#"{"text":"a"} trailing"#).is_err());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let too_deep = json_to_proto(&data, deep.as_bytes()).unwrap_err();
        assert_eq!(too_deep.code(), tonic::Code::InvalidArgument);
    }
}
