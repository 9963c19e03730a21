//! Binding and stopping the server through the library API.

use formatdata::addr::HostPort;
use formatdata::pb::Data;
use formatdata::server::{BindError, Listeners};

use formatdata_test_support::app::spawn_app;

#[tokio::test]
async fn shutdown_completes_and_closes_the_port() {
    let app = spawn_app().await;
    let addr = app.addr;
    let mut client = app.client().await;
    client
        .do_format(Data { text: "x".into() })
        .await
        .expect("served before shutdown");

    app.shutdown().await.expect("run returns Ok after shutdown");

    let refused = tokio::net::TcpStream::connect(addr).await;
    assert!(refused.is_err(), "{addr} still accepts connections");
}

#[tokio::test]
async fn localhost_is_served_on_every_address_it_resolves_to_on_one_port() {
    let listeners = Listeners::bind(&"localhost:0".parse().unwrap())
        .await
        .unwrap();
    let bound = listeners.local_addrs();

    let mut resolved: Vec<_> = tokio::net::lookup_host("localhost:0")
        .await
        .unwrap()
        .map(|addr| addr.ip())
        .collect();
    resolved.dedup();
    let bound_ips: Vec<_> = bound.iter().map(|addr| addr.ip()).collect();
    for ip in &bound_ips {
        assert!(ip.is_loopback(), "{ip} is not loopback");
        assert!(resolved.contains(ip), "{ip} is not an address of localhost");
    }
    assert!(!bound.is_empty());
    assert!(bound.iter().all(|addr| addr.port() == bound[0].port()));
    assert_ne!(bound[0].port(), 0, "the real port is reported, not 0");
}

#[tokio::test]
async fn a_port_in_use_is_an_error_naming_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: HostPort = taken.local_addr().unwrap().to_string().parse().unwrap();

    let error = Listeners::bind(&addr).await.unwrap_err();

    assert!(matches!(error, BindError::Listen { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.to_lowercase().contains("in use"), "{message}");
}
