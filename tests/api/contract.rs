//! The wire contract shared with the Python original must not drift: package, service, method
//! path, message and field number.

use formatdata::pb::FILE_DESCRIPTOR_SET;
use formatdata::pb::format_data_server::FormatDataServer;
use formatdata::service::FormatDataService;
use prost::Message;
use prost_types::FileDescriptorSet;
use prost_types::field_descriptor_proto::Type;
use tonic::server::NamedService;

#[test]
fn service_name_is_the_tutorials() {
    assert_eq!(
        <FormatDataServer<FormatDataService> as NamedService>::NAME,
        "example.FormatData"
    );
}

#[test]
fn descriptor_set_describes_the_tutorials_contract() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("valid descriptor set");
    let file = set
        .file
        .iter()
        .find(|file| file.name() == "data.proto")
        .expect("data.proto is in the descriptor set");
    assert_eq!(file.package(), "example");
    assert_eq!(file.syntax(), "proto3");

    let service = file
        .service
        .iter()
        .find(|service| service.name() == "FormatData")
        .expect("service FormatData");
    let method = service
        .method
        .iter()
        .find(|method| method.name() == "DoFormat")
        .expect("rpc DoFormat");
    assert_eq!(method.input_type(), ".example.Data");
    assert_eq!(method.output_type(), ".example.Data");
    assert!(!method.client_streaming() && !method.server_streaming());

    // Added later, and only added: old clients never see a change.
    let stream = service
        .method
        .iter()
        .find(|method| method.name() == "DoFormatStream")
        .expect("rpc DoFormatStream");
    assert_eq!(stream.input_type(), ".example.Data");
    assert_eq!(stream.output_type(), ".example.Data");
    assert!(stream.client_streaming() && stream.server_streaming());

    let data = file
        .message_type
        .iter()
        .find(|message| message.name() == "Data")
        .expect("message Data");
    let text = data
        .field
        .iter()
        .find(|field| field.name() == "text")
        .expect("field text");
    assert_eq!(text.number(), 1);
    assert_eq!(text.r#type(), Type::String);
}

#[test]
fn descriptor_set_keeps_source_info_for_reflection_clients() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    assert!(set.file.iter().all(|file| file.source_code_info.is_some()));
}
