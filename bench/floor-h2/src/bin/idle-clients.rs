//! The clients of bench/idle_connections.sh: opens COUNT HTTP/2 connections to ADDR, makes one
//! unary DoFormat call on each (with grpcio's headers, as the tutorial's client sends them), and
//! holds them all open and idle until its standard input closes. Prints `ready N` once every
//! call has its reply. Usage: idle-clients ADDR COUNT

use std::io::Read;

use bytes::Bytes;
use http::Request;
use tokio::net::TcpStream;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().ok_or("usage: idle-clients ADDR COUNT")?;
    let count: usize = args.next().ok_or("usage: idle-clients ADDR COUNT")?.parse()?;
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        held.push(connect_and_call(&addr).await?);
    }
    println!("ready {}", held.len());
    // Held until told to go: the script reads the server's memory meanwhile.
    tokio::task::spawn_blocking(|| std::io::stdin().read_to_end(&mut Vec::new())).await??;
    drop(held);
    Ok(())
}

async fn connect_and_call(addr: &str) -> Result<impl Sized, Box<dyn std::error::Error>> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let (client, connection) = h2::client::handshake(tcp).await?;
    let task = tokio::spawn(connection);
    let mut client = client.ready().await?;
    let request = Request::post(format!("http://{addr}/example.FormatData/DoFormat"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-accept-encoding", "identity, deflate, gzip")
        .header("user-agent", "grpc-python/1.85.3 grpc-c/58.0.0 (linux; chttp2)")
        .body(())?;
    let (response, mut send) = client.send_request(request, false)?;
    send.send_data(Bytes::from_static(b"\x00\x00\x00\x00\x0e\x0a\x0chello,world!"), true)?;
    let mut body = response.await?.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        body.flow_control().release_capacity(chunk.len())?;
    }
    body.trailers().await?;
    Ok((client, task))
}
