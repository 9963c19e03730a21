//! The methods the server serves, and of what kind, derived from the descriptors compiled into
//! the binary, never typed by hand: `proto/` (through `build.rs`), and those the health and
//! reflection crates carry. Add an RPC to a `.proto` and it is here, so it is counted in the
//! metrics and held to its kind's rules (one request message for unary calls) like the others.

use std::sync::OnceLock;

use prost::Message;
use prost_types::FileDescriptorSet;

use crate::pb;

/// The encoded descriptors of the services reflection describes: ours, and health.
pub(crate) const REFLECTED: &[&[u8]] = &[
    pb::FILE_DESCRIPTOR_SET,
    tonic_health::pb::FILE_DESCRIPTOR_SET,
];

/// Those of reflection itself, which tonic-reflection describes on its own.
pub(crate) const REFLECTION: &[&[u8]] = &[
    tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET,
    tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
];

/// Whether each side streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

impl Kind {
    fn new(client_streaming: bool, server_streaming: bool) -> Self {
        match (client_streaming, server_streaming) {
            (false, false) => Self::Unary,
            (true, false) => Self::ClientStream,
            (false, true) => Self::ServerStream,
            (true, true) => Self::BidiStream,
        }
    }

    /// The name go-grpc-prometheus gives it (its `grpc_type` label).
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Unary => "unary",
            Self::ClientStream => "client_stream",
            Self::ServerStream => "server_stream",
            Self::BidiStream => "bidi_stream",
        }
    }

    /// Whether a call sends exactly one request message; gRPC refuses a second one.
    pub(crate) fn one_request(self) -> bool {
        matches!(self, Self::Unary | Self::ServerStream)
    }

    /// Whether a call answers with exactly one reply message.
    pub(crate) fn one_reply(self) -> bool {
        matches!(self, Self::Unary | Self::ClientStream)
    }
}

/// One method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Method {
    /// `/example.FormatData/DoFormat`: the HTTP/2 `:path` of its calls.
    pub path: String,
    /// `example.FormatData`.
    pub service: String,
    /// `DoFormat`.
    pub name: String,
    pub kind: Kind,
    /// Its place in [`served`]'s table, for tables of per-method things.
    pub index: usize,
}

/// A set of methods, found by path.
#[derive(Debug, Default)]
pub(crate) struct Methods(Vec<Method>);

impl Methods {
    /// The methods of every service in `sets` (encoded `FileDescriptorSet`s), each once.
    pub(crate) fn from_descriptor_sets(sets: &[&[u8]]) -> Result<Self, prost::DecodeError> {
        let mut methods = Self::default();
        for set in sets {
            for file in FileDescriptorSet::decode(*set)?.file {
                let package = file.package();
                for service in &file.service {
                    let service_name = match package {
                        "" => service.name().to_owned(),
                        package => format!("{package}.{}", service.name()),
                    };
                    for method in &service.method {
                        let path = format!("/{service_name}/{}", method.name());
                        if methods.find(&path).is_none() {
                            let index = methods.0.len();
                            methods.0.push(Method {
                                index,
                                path,
                                service: service_name.clone(),
                                name: method.name().to_owned(),
                                kind: Kind::new(
                                    method.client_streaming(),
                                    method.server_streaming(),
                                ),
                            });
                        }
                    }
                }
            }
        }
        Ok(methods)
    }

    /// The method whose calls go to `path`; a handful of methods, so a scan is quickest.
    pub(crate) fn find(&self, path: &str) -> Option<&Method> {
        self.0.iter().find(|method| method.path == path)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Method> {
        self.0.iter()
    }

    /// The method `name` of `service`.
    pub(crate) fn named(&self, service: &str, name: &str) -> Option<&Method> {
        self.0
            .iter()
            .find(|method| method.service == service && method.name == name)
    }
}

/// Every method this server serves: its own, health and reflection.
pub(crate) fn served() -> &'static Methods {
    static SERVED: OnceLock<Methods> = OnceLock::new();
    SERVED.get_or_init(|| {
        let sets: Vec<&[u8]> = REFLECTED.iter().chain(REFLECTION).copied().collect();
        Methods::from_descriptor_sets(&sets).expect("the descriptors built into the binary decode")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_served_methods_come_from_the_descriptors_with_their_kinds() {
        let methods = served();
        let kind = |path| methods.find(path).map(|method| method.kind);
        assert_eq!(kind("/example.FormatData/DoFormat"), Some(Kind::Unary));
        assert_eq!(
            kind("/example.FormatData/DoFormatStream"),
            Some(Kind::BidiStream)
        );
        assert_eq!(kind("/grpc.health.v1.Health/Check"), Some(Kind::Unary));
        assert_eq!(
            kind("/grpc.health.v1.Health/Watch"),
            Some(Kind::ServerStream)
        );
        assert_eq!(
            kind("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"),
            Some(Kind::BidiStream)
        );
        assert_eq!(
            kind("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
            Some(Kind::BidiStream)
        );
        assert_eq!(kind("/no.Such/Method"), None);
        let do_format = methods.named("example.FormatData", "DoFormat").unwrap();
        assert_eq!(do_format.path, "/example.FormatData/DoFormat");
        assert!(Kind::ServerStream.one_request() && !Kind::BidiStream.one_request());
    }
}
