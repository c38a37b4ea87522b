//! The extender's TLS on a real loopback socket: a server certificate
//! checked by the client against the CA (as the scheduler's `caData` does),
//! and client certificates required when `--client-ca` is set.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use spillway::decision::time::Time;
use spillway::extender::backend::{BindError, BindRequest, Binder, Extender, Index};
use spillway::extender::server::{RouterConfig, router};
use spillway::serve::tls::{TlsFiles, server_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// CA, server and client certificates written as PEM files.
pub(crate) struct Pki {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) ca: String,
    pub(crate) client_cert: String,
    pub(crate) client_key: String,
}

pub(crate) fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "spillway test CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "spillway-scheduler");
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(dir.path().join("tls.crt"), server.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), server_key.serialize_pem()).unwrap();
    Pki {
        dir,
        ca: ca.pem(),
        client_cert: client.pem(),
        client_key: client_key.serialize_pem(),
    }
}

pub(crate) struct NoBinder;

impl Binder for NoBinder {
    async fn bind(&self, _: BindRequest) -> Result<(), BindError> {
        Ok(())
    }
}

pub(crate) fn files(dir: &Path, client_ca: bool) -> TlsFiles {
    TlsFiles {
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: client_ca.then(|| dir.join("ca.crt")),
    }
}

fn start(files: &TlsFiles) -> SocketAddr {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = server_config(files).unwrap();
    let ext = Arc::new(Extender::new(
        Index::default(),
        NoBinder,
        Box::new(|| Time::from_secs(1)),
    ));
    ext.set_ready(true);
    let app = router(ext, &RouterConfig::default());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let config = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(config));
    tokio::spawn(async move {
        axum_server::from_tcp_rustls(listener, config)
            .serve(app.into_make_service())
            .await
            .unwrap();
    });
    addr
}

/// GET /readyz over TLS, verifying the server against `pki.ca`, presenting
/// the client certificate when `with_cert`. The status line, or the error.
async fn get_readyz(addr: SocketAddr, pki: &Pki, with_cert: bool) -> Result<String, String> {
    let config = client_config(pki, with_cert, &[]);
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(b"GET /readyz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    tls.read_to_end(&mut out).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out);
    Ok(text.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn the_extender_serves_https_with_a_certificate_the_ca_vouches_for() {
    let pki = pki();
    let addr = start(&files(pki.dir.path(), false));
    assert_eq!(
        get_readyz(addr, &pki, false).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
}

#[tokio::test]
async fn with_a_client_ca_only_clients_with_a_certificate_get_an_answer() {
    let pki = pki();
    let addr = start(&files(pki.dir.path(), true));
    assert_eq!(
        get_readyz(addr, &pki, true).await.unwrap(),
        "HTTP/1.1 200 OK"
    );
    let refused = get_readyz(addr, &pki, false).await;
    assert!(
        refused.as_ref().is_err() || refused.as_ref().is_ok_and(String::is_empty),
        "a client without a certificate got {refused:?}"
    );
}

#[test]
fn bad_tls_files_are_reported_by_path() {
    let pki = pki();
    let mut f = files(pki.dir.path(), false);
    f.key = pki.dir.path().join("missing.key");
    let err = format!("{:#}", server_config(&f).unwrap_err());
    assert!(err.contains("missing.key"), "{err}");
    // The CA's certificate with the server's key: not a pair.
    let mut f = files(pki.dir.path(), false);
    f.cert = pki.dir.path().join("ca.crt");
    let err = format!("{:#}", server_config(&f).unwrap_err());
    assert!(err.contains("do not form a valid pair"), "{err}");
}

/// A client config trusting `pki.ca`, with the client certificate if
/// `with_cert`, offering `alpn`.
fn client_config(pki: &Pki, with_cert: bool, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let mut config = if with_cert {
        let chain = CertificateDer::pem_slice_iter(pki.client_cert.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).unwrap();
        builder.with_client_auth_cert(chain, key).unwrap()
    } else {
        builder.with_no_client_auth()
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// A TLS connection to `addr` with [`client_config`].
async fn connect(
    addr: SocketAddr,
    pki: &Pki,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(pki, true, alpn)));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_offering_http2_sends_every_call_over_one_connection() {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Bytes;
    use hyper_util::rt::{TokioExecutor, TokioIo};

    let pki = pki();
    let addr = start(&files(pki.dir.path(), true));
    // As Go's transport with HTTP/2 configured: h2 first, then http/1.1.
    let tls = connect(addr, &pki, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    // Twenty Filters at once, multiplexed on the one connection.
    let body = include_bytes!(
        "../fixtures/kube-scheduler-v1.30/cache/0001-filter-e2e-cache_c-gpu-1.req.json"
    );
    let calls = (0..20).map(|_| {
        let mut sender = sender.clone();
        async move {
            let req = hyper::Request::post(format!(
                "https://localhost:{}/scheduler/filter",
                addr.port()
            ))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body)))
            .unwrap();
            let resp = sender.send_request(req).await.unwrap();
            let status = resp.status();
            let answer = resp.into_body().collect().await.unwrap().to_bytes();
            (status, answer)
        }
    });
    for (status, answer) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
        let v: serde_json::Value = serde_json::from_slice(&answer).unwrap();
        assert!(
            v.get("NodeNames").is_some() || v.get("Nodes").is_some(),
            "{v}"
        );
    }
    // A client that offers only HTTP/1.1 still gets it.
    let tls = connect(addr, &pki, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
}
