//! A real Prometheus server for the scaler's tests: the Debian package's
//! `prometheus` binary (or `$SPILLWAY_PROMETHEUS`), started on 127.0.0.1
//! with a temporary config and storage, scraping every second an exporter
//! the test serves on 127.0.0.1 and whose series it sets.
//!
//! Two scrape jobs read the exporter, as a cluster's would:
//! - `serving` (`/serving`): the pod's own endpoint, as a PodMonitor
//!   scrapes vLLM; series carry `namespace` and `pod` themselves;
//! - `dcgm` (`/dcgm`): a node exporter whose target labels are its own pod
//!   (`gpu-operator/dcgm-exporter-x`), so Prometheus renames the series'
//!   `pod`/`namespace` to `exported_pod`/`exported_namespace`
//!   (`honor_labels: false`), as it does with dcgm-exporter.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::get;

/// The exporter's two pages.
#[derive(Clone, Default)]
pub struct Exporter {
    serving: Arc<Mutex<String>>,
    dcgm: Arc<Mutex<String>>,
    addr: Arc<Mutex<Option<SocketAddr>>>,
}

async fn serving_page(State(e): State<Exporter>) -> String {
    e.serving.lock().unwrap().clone()
}

async fn dcgm_page(State(e): State<Exporter>) -> String {
    e.dcgm.lock().unwrap().clone()
}

impl Exporter {
    /// Serves both pages on an ephemeral loopback port.
    pub async fn start() -> Self {
        let e = Self::default();
        let app = Router::new()
            .route("/serving", get(serving_page))
            .route("/dcgm", get(dcgm_page))
            .with_state(e.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        *e.addr.lock().unwrap() = Some(listener.local_addr().unwrap());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        e
    }

    fn addr(&self) -> SocketAddr {
        self.addr.lock().unwrap().unwrap()
    }

    /// Replaces the serving page (text exposition format).
    pub fn set_serving(&self, text: &str) {
        text.clone_into(&mut self.serving.lock().unwrap());
    }

    /// Replaces the DCGM page.
    pub fn set_dcgm(&self, text: &str) {
        text.clone_into(&mut self.dcgm.lock().unwrap());
    }
}

/// A running Prometheus; killed on drop.
pub struct Prometheus {
    child: Option<Child>,
    dir: tempfile::TempDir,
    port: u16,
    http: reqwest_free::Http,
}

fn binary() -> PathBuf {
    let path = std::env::var_os("SPILLWAY_PROMETHEUS")
        .map_or_else(|| PathBuf::from("/usr/bin/prometheus"), PathBuf::from);
    assert!(
        path.exists(),
        "the scaler's tests need a real Prometheus: {} does not exist (apt-get install prometheus, or set SPILLWAY_PROMETHEUS; .ci/run installs it)",
        path.display()
    );
    path
}

impl Prometheus {
    /// Starts Prometheus scraping `exporter` every second and waits until
    /// it is ready and has scraped both jobs once.
    pub async fn start(exporter: &Exporter) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let target = exporter.addr().to_string();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n\
             - job_name: serving\n  metrics_path: /serving\n  static_configs:\n  - targets: ['{target}']\n\
             - job_name: dcgm\n  metrics_path: /dcgm\n  static_configs:\n  - targets: ['{target}']\n    labels:\n      pod: dcgm-exporter-x\n      namespace: gpu-operator\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let mut p = Self {
            child: None,
            dir,
            port,
            http: reqwest_free::Http::new(),
        };
        p.spawn();
        p.wait_ready().await;
        p
    }

    fn spawn(&mut self) {
        let child = Command::new(binary())
            .arg(format!(
                "--config.file={}",
                self.dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{}", self.port))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        self.child = Some(child);
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        for _ in 0..600 {
            if self
                .http
                .get(&format!("{}/-/ready", self.url()))
                .await
                .is_some_and(|(code, _)| code == 200)
            {
                // Both jobs scraped at least once.
                let up = self.query("count(up == 1)").await;
                if up == Some(2.0) {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("prometheus did not become ready on {}", self.url());
    }

    /// The single value of an instant query, if it has one.
    pub async fn query(&self, promql: &str) -> Option<f64> {
        let q: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let (code, body) = self
            .http
            .get(&format!("{}/api/v1/query?query={q}", self.url()))
            .await?;
        if code != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_slice(&body).ok()?;
        let rows = v["data"]["result"].as_array()?;
        if rows.len() != 1 {
            return None;
        }
        rows[0]["value"][1].as_str()?.parse().ok()
    }

    /// Waits until `promql` returns exactly `want` (the exporter's new
    /// values were scraped).
    pub async fn wait_for(&self, promql: &str, want: f64) {
        for _ in 0..300 {
            if self.query(promql).await == Some(want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "{promql} never returned {want} (last: {:?})",
            self.query(promql).await
        );
    }

    /// Kills the server, as a crash or an outage would.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same port and storage.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn();
        self.wait_ready().await;
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A minimal HTTP/1 GET client on hyper for the harness (the scaler under
/// test uses its own).
mod reqwest_free {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use hyper_util::client::legacy::Client;
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;

    pub struct Http(Client<HttpConnector, Empty<Bytes>>);

    impl Http {
        pub fn new() -> Self {
            Self(Client::builder(TokioExecutor::new()).build_http())
        }

        pub async fn get(&self, url: &str) -> Option<(u16, Bytes)> {
            let resp = self.0.get(url.parse().ok()?).await.ok()?;
            let code = resp.status().as_u16();
            let body = resp.into_body().collect().await.ok()?.to_bytes();
            Some((code, body))
        }
    }
}
