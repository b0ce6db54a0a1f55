//! The floor of this stack for bench/proxy.sh: a bare hyper forwarder (hyper-util's pooled
//! client, which pbxgate replaced by a leaner pool of its own; no routing, checks or header
//! hygiene). `bare_proxy LISTEN UPSTREAM`.
//!
//! With `BARE_PER_CORE=1` it runs thread-per-core instead of on tokio's multi-thread
//! runtime: one current-thread runtime per core, each with its own listener on the same
//! port (SO_REUSEPORT) and its own upstream pool, as nginx runs one process per core.

use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen: std::net::SocketAddr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:18083".into())
        .parse()?;
    let upstream = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:18080".into());
    if std::env::var_os("BARE_PER_CORE").is_none() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(serve(listen, upstream));
    }
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let threads: Vec<_> = (0..cores)
        .map(|_| {
            let upstream = upstream.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(serve(listen, upstream))
            })
        })
        .collect();
    for t in threads {
        t.join().expect("serving thread")?;
    }
    Ok(())
}

async fn serve(listen: std::net::SocketAddr, upstream: String) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector);
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(listen)?;
    let listener = socket.listen(1024)?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (client, upstream) = (client.clone(), upstream.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                let client = client.clone();
                let uri = format!("{upstream}{}", req.uri().path()).parse();
                async move {
                    *req.uri_mut() = uri?;
                    Ok::<_, anyhow::Error>(client.request(req).await?)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
