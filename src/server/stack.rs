//! The call stack, assembled in one place from the outside in: the per-call middleware
//! (`call.rs`), the caller's deadline (`deadline.rs`), the fast path (`fast_path.rs`), then
//! tonic's router over FormatData (behind its bearer-token check, `auth.rs`), health and
//! reflection. A new service is added to the router here.

use tonic::codec::CompressionEncoding;
use tonic::service::Routes;
use tonic::service::interceptor::InterceptedService;
use tonic_health::server::HealthReporter;
use tower::Layer;

use crate::grpc::methods;
use crate::pb::format_data_server::FormatDataServer;
use crate::server::calls::CallStack;
use crate::server::calls::auth::RequireBearer;
use crate::server::calls::call::CallsLayer;
use crate::server::calls::deadline::Deadlines;
use crate::server::calls::fast_path::FastPath;
use crate::server::config::ServerConfig;
use crate::service::FormatDataService;

/// tonic's router over FormatData, health (reporting SERVING) and reflection, and the reporter
/// that sets what health says.
pub(super) async fn routes(
    config: &ServerConfig,
) -> Result<(HealthReporter, Routes), tonic_reflection::server::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<FormatDataServer<FormatDataService>>()
        .await;
    let routes = Routes::new(health_service)
        .add_service(format_data(config))
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .prepare();
    Ok((health, routes))
}

/// The stack every call goes through, as `config` sets it up, with no socket, no connection and
/// no metrics: it takes requests with any body, so the fuzz targets drive it directly.
pub async fn call_stack(
    config: &ServerConfig,
) -> Result<CallStack, tonic_reflection::server::Error> {
    let (_health, routes) = routes(config).await?;
    let calls = CallsLayer {
        max_message_bytes: config.max_message_bytes,
        reply_compression: config.reply_compression,
        ..CallsLayer::default()
    };
    Ok(http_service(routes, calls, config))
}

/// The call stack over `routes`, with `calls` accounting for the calls.
pub(super) fn http_service(routes: Routes, calls: CallsLayer, config: &ServerConfig) -> CallStack {
    calls.layer(Deadlines::new(FastPath::new(
        routes,
        config.auth_token.is_none(),
        config.max_message_bytes,
    )))
}

/// The FormatData service with its limits, compression and authentication.
fn format_data(
    config: &ServerConfig,
) -> InterceptedService<FormatDataServer<FormatDataService>, RequireBearer> {
    // No encoding limit here: the service holds replies to the limit before compression
    // (`service::format`), as the fast path does. Replies are compressed after the services,
    // for every path alike (`compress.rs`); tonic only decompresses requests.
    let server = FormatDataServer::new(FormatDataService {
        max_message_bytes: config.max_message_bytes,
    })
    .max_decoding_message_size(config.max_message_bytes)
    .accept_compressed(CompressionEncoding::Gzip)
    .accept_compressed(CompressionEncoding::Zstd);
    InterceptedService::new(server, RequireBearer::new(config.auth_token.as_deref()))
}

/// gRPC reflection over everything served: our `proto/` and the health service.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    methods::REFLECTED.iter().fold(
        tonic_reflection::server::Builder::configure(),
        |builder, set| builder.register_encoded_file_descriptor_set(set),
    )
}
