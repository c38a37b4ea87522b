//! The expander's gRPC server: tonic over HTTP/2, TLS required (as
//! cluster-autoscaler refuses a plaintext expander), the certificate
//! reloaded from its files like the extender's.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tonic::{Request, Response, Status};

use super::Expander;
use super::proto::grpcplugin::expander_server::{Expander as ExpanderRpc, ExpanderServer};
use super::proto::grpcplugin::{BestOptionsRequest, BestOptionsResponse};
use crate::extender::backend::Binder;

/// Largest request accepted: cluster-autoscaler's own receive limit (128 MiB);
/// a request with thousands of pending pods is tens of MB.
pub const MAX_MESSAGE: usize = 128 << 20;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The tonic service over an [`Expander`].
pub struct Service<B: Binder>(pub Arc<Expander<B>>);

#[tonic::async_trait]
impl<B: Binder> ExpanderRpc for Service<B> {
    async fn best_options(
        &self,
        request: Request<BestOptionsRequest>,
    ) -> Result<Response<BestOptionsResponse>, Status> {
        Ok(Response::new(
            self.0.best_options(request.into_inner()).await,
        ))
    }
}

/// The TLS configuration for gRPC: the extender's serving certificate
/// (reloaded when its files change) with HTTP/2 as the only ALPN protocol.
#[must_use]
pub fn grpc_tls(mut config: rustls::ServerConfig) -> rustls::ServerConfig {
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

/// Serves `expander` on `listener` over TLS until `shutdown` resolves.
///
/// # Errors
/// The server stops on an I/O error of the listener.
pub async fn serve<B: Binder>(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    expander: Arc<Expander<B>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr: Option<SocketAddr> = listener.local_addr().ok();
    let acceptor = TlsAcceptor::from(Arc::new(grpc_tls(tls)));
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let accept = tokio::spawn(async move {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "expander: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            // Each handshake on its own: a slow client holds up no other.
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok::<_, std::io::Error>(tls)).await;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(%peer, error = %e, "expander: TLS handshake failed");
                    }
                    Err(_) => tracing::warn!(%peer, "expander: TLS handshake timed out"),
                }
            });
        }
    });
    let incoming = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|conn| (conn, rx))
    });
    tracing::info!(listen = ?addr, "expander: serving gRPC (TLS)");
    let service = ExpanderServer::new(Service(expander))
        .max_decoding_message_size(MAX_MESSAGE)
        .max_encoding_message_size(MAX_MESSAGE);
    let result = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .context("serving the expander");
    accept.abort();
    result
}
