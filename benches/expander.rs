//! cluster-autoscaler's BestOptions with 200 node groups and 1,000 pending
//! pods (every option naming every pod, as CA sends them when every group
//! could host every pod) over a 1,000-node cluster: p50 and p99 of the
//! answer, in process (decode + rank) and through the gRPC server over TLS
//! on loopback (tonic client and server, as cluster-autoscaler calls it).
//!
//! `cargo bench --bench expander` (`-- --groups N --pending N --calls N`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use prost::Message;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use spillway::expander::proto::grpcplugin::expander_client::ExpanderClient;
use spillway::expander::{Config, Expander};
use spillway::extender::backend::{BindError, BindRequest, Binder, Extender};
use spillway::load::expander::{NOW, scale_up};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

struct NoBinder;

impl Binder for NoBinder {
    async fn bind(&self, _: BindRequest) -> Result<(), BindError> {
        Ok(())
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    // Nearest rank.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn report(what: &str, mut times: Vec<Duration>) {
    times.sort_unstable();
    println!(
        "{what:<34} p50 {:>8.1} ms   p99 {:>8.1} ms   ({} calls)",
        percentile(&times, 0.50).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.len()
    );
}

fn main() {
    // `cargo test --benches` runs benches with `--bench`-less args: do nothing.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let groups = arg("--groups", 200);
    let pending = arg("--pending", 1000);
    let calls = arg("--calls", 50);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let (index, req) = scale_up(1000, 10, groups, pending);
    println!(
        "BestOptions: {groups} node groups, {pending} pending pods, request {:.1} MB",
        f64::from(u32::try_from(req.encoded_len()).unwrap_or(u32::MAX)) / 1e6
    );
    let ext = Arc::new(Extender::new(index, NoBinder, Box::new(|| NOW)));
    ext.set_ready(true);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let expander = Arc::new(Expander::new(
        ext.clone(),
        Config {
            prices: vec!["eks-gpu-cloud-*=2.5".parse().unwrap()],
            budget: Duration::from_secs(60),
            ..Config::default()
        },
    ));

    // Decode alone, then decode + rank in process.
    let mut decode = Vec::new();
    let mut rank = Vec::new();
    let mut chosen = String::new();
    for i in 0..calls + 3 {
        let t = Instant::now();
        let d = spillway::expander::decode::decode(&req, |_| 2.5, NOW).unwrap();
        let dt = t.elapsed();
        drop(d);
        let t = Instant::now();
        let resp = rt.block_on(expander.best_options(req.clone()));
        let rt_ = t.elapsed();
        if i >= 3 {
            decode.push(dt);
            rank.push(rt_);
        }
        chosen = format!("{:?}", resp.options.first().map(|o| &o.node_group_id));
    }
    report("decode only", decode);
    report("decode + rank (in process)", rank);

    // Through tonic over TLS on loopback.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "bench CA");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem()).unwrap();
    let tls = spillway::serve::tls::server_config(&spillway::serve::tls::TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
        client_ca: None,
    })
    .unwrap();
    let grpc = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(spillway::expander::server::serve(
            listener,
            tls,
            expander.clone(),
            std::future::pending(),
        ));
        let channel = Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(ca.pem()))
                    .domain_name("localhost"),
            )
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut client = ExpanderClient::new(channel)
            .max_decoding_message_size(usize::MAX)
            .max_encoding_message_size(usize::MAX);
        let mut times = Vec::new();
        for i in 0..calls + 3 {
            let r = req.clone();
            let t = Instant::now();
            let resp = client.best_options(r).await.unwrap().into_inner();
            if i >= 3 {
                times.push(t.elapsed());
            }
            assert!(!resp.options.is_empty());
        }
        times
    });
    report("gRPC over TLS (client to answer)", grpc);
    println!("chosen: {chosen}");
    let m = expander.metrics();
    println!(
        "fallbacks: {} (budget 60 s here; the server's default is 2 s)",
        m.fallbacks.with_label_values(&["timeout"]).get()
            + m.fallbacks.with_label_values(&["overload"]).get()
    );
}
