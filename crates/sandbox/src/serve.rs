//! The simulators' HTTP/1.1 server (with upgrades, for the 3CX WebSocket), over TLS when
//! given an acceptor. Deliberately plain: the product's server is what is under test.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Accepts connections until the task is aborted. The connections are owned by this task,
/// so aborting it closes them too: a dropped simulator is gone, as a server that went down.
pub async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, router: Router) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (tcp, addr) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "simulator: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let _ = tcp.set_nodelay(true);
        let (router, tls) = (router.clone(), tls.clone());
        conns.spawn(async move {
            match tls {
                None => connection(tcp, addr, router).await,
                Some(acceptor) => match acceptor.accept(tcp).await {
                    Ok(stream) => connection(stream, addr, router).await,
                    Err(e) => tracing::debug!(%addr, error = %e, "simulator: TLS handshake failed"),
                },
            }
        });
    }
}

async fn connection<I>(io: I, addr: SocketAddr, router: Router)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
        let router = router.clone();
        async move {
            let res = tower::ServiceExt::oneshot(router, req)
                .await
                .unwrap_or_else(|never: Infallible| match never {});
            Ok::<_, Infallible>(res)
        }
    });
    let conn = http1::Builder::new()
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        tracing::debug!(%addr, error = %e, "simulator: connection ended with an error");
    }
}
