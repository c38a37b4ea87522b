//! A client of the Prometheus HTTP API's instant query
//! (`GET /api/v1/query`), over the same hyper and rustls stack as kube's
//! client: an optional CA bundle, an optional bearer token, a timeout.
//!
//! ```text
//!  query(promql) ──GET {url}/api/v1/query?query=…──► Prometheus
//!        ◄── {"status":"success","data":{"resultType":"vector","result":[{"metric":{…},"value":[ts,"v"]}]}}
//!        ◄── {"status":"error","errorType":"bad_data","error":"…"}   (400/422/503)
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::Deserialize;

use crate::decision::scaler::Sample;

/// The largest answer read (a per-pod series over a large cluster is a few MB).
pub const MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum PromError {
    /// The URL or CA bundle is unusable.
    #[error("{0}")]
    Config(String),
    /// No answer: connection refused, DNS, TLS, or the timeout.
    #[error("Prometheus at {url} is unreachable: {message}")]
    Unreachable {
        /// The endpoint.
        url: String,
        /// What failed.
        message: String,
    },
    /// Prometheus refused the query (bad PromQL, timeout on its side).
    #[error("Prometheus rejected the query ({kind}): {message}")]
    Rejected {
        /// `errorType` (`bad_data`, `execution`, `timeout`, …).
        kind: String,
        /// `error`.
        message: String,
    },
    /// An HTTP error without Prometheus' error body (a proxy, a 401).
    #[error("HTTP {status} from Prometheus: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// The answer is not the API's JSON.
    #[error("cannot read Prometheus' answer: {0}")]
    Decode(String),
}

impl PromError {
    /// A stable label for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Unreachable { .. } => "unreachable",
            Self::Rejected { .. } => "rejected",
            Self::Http { .. } => "http",
            Self::Decode(_) => "decode",
        }
    }

    /// Prometheus itself could not be reached (as opposed to a bad query):
    /// the endpoint is backed off.
    #[must_use]
    pub fn is_unreachable(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Http { status, .. } => *status >= 500 || *status == 429,
            Self::Config(_) | Self::Rejected { .. } | Self::Decode(_) => false,
        }
    }
}

/// How to reach one Prometheus.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    /// Base URL (a path prefix is kept).
    pub url: String,
    /// PEM CA bundle for https.
    pub ca_bundle: Option<String>,
    /// Bearer token.
    pub token: Option<String>,
    /// Per-query time limit, in milliseconds.
    pub timeout_ms: u64,
}

/// A client for one [`Endpoint`].
#[derive(Clone)]
pub struct PromClient {
    endpoint: Endpoint,
    http: Client<hyper_rustls::HttpsConnector<HttpConnector>, Empty<Bytes>>,
}

impl std::fmt::Debug for PromClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromClient")
            .field("url", &self.endpoint.url)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Answer {
    status: String,
    #[serde(default)]
    data: Option<Data>,
    #[serde(default, rename = "errorType")]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data {
    #[serde(rename = "resultType")]
    result_type: String,
    result: serde_json::Value,
}

#[derive(Deserialize)]
struct VectorRow {
    #[serde(default)]
    metric: BTreeMap<String, String>,
    value: (f64, String),
}

/// A value as Prometheus writes it: a decimal, `NaN`, `+Inf` or `-Inf`.
fn value(text: &str) -> Result<f64, PromError> {
    match text {
        "NaN" => Ok(f64::NAN),
        "+Inf" | "Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        t => t
            .parse()
            .map_err(|_| PromError::Decode(format!("value {t:?} is not a number"))),
    }
}

/// The samples of an instant-query answer body.
///
/// # Errors
/// A `status: error` answer, or a body that is not the API's JSON.
pub fn parse_answer(body: &[u8]) -> Result<Vec<Sample>, PromError> {
    let answer: Answer =
        serde_json::from_slice(body).map_err(|e| PromError::Decode(e.to_string()))?;
    if answer.status != "success" {
        return Err(PromError::Rejected {
            kind: answer.error_type.unwrap_or_else(|| "unknown".to_owned()),
            message: answer.error.unwrap_or_default(),
        });
    }
    let data = answer
        .data
        .ok_or_else(|| PromError::Decode("success without data".to_owned()))?;
    match data.result_type.as_str() {
        "vector" => {
            let rows: Vec<VectorRow> = serde_json::from_value(data.result)
                .map_err(|e| PromError::Decode(e.to_string()))?;
            rows.into_iter()
                .map(|r| {
                    Ok(Sample {
                        labels: r.metric,
                        value: value(&r.value.1)?,
                    })
                })
                .collect()
        }
        "scalar" => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| PromError::Decode(e.to_string()))?;
            Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: value(&v)?,
            }])
        }
        other => Err(PromError::Decode(format!(
            "the query returned a {other}, not an instant vector or scalar"
        ))),
    }
}

impl PromClient {
    /// A client for `endpoint`; https URLs are verified against its CA
    /// bundle, or the system's trust store without one.
    ///
    /// # Errors
    /// A CA bundle with no certificate in it.
    pub fn new(endpoint: Endpoint) -> Result<Self, PromError> {
        let mut roots = rustls::RootCertStore::empty();
        match &endpoint.ca_bundle {
            Some(pem) => {
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    let cert = cert
                        .map_err(|e| PromError::Config(format!("spec.prometheus.caBundle: {e}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| PromError::Config(format!("spec.prometheus.caBundle: {e}")))?;
                }
                if roots.is_empty() {
                    return Err(PromError::Config(
                        "spec.prometheus.caBundle: no PEM certificate in it".to_owned(),
                    ));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PromError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        Ok(Self { endpoint, http })
    }

    /// The endpoint this client reads.
    #[must_use]
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// Runs an instant query at Prometheus' current time.
    ///
    /// # Errors
    /// [`PromError`]: unreachable, rejected, or an unreadable answer.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>, PromError> {
        let base = self.endpoint.url.trim_end_matches('/');
        let q: String = form_urlencoded::byte_serialize(promql.as_bytes()).collect();
        let uri: hyper::Uri = format!("{base}/api/v1/query?query={q}")
            .parse()
            .map_err(|e| PromError::Config(format!("spec.prometheus.url: {e}")))?;
        let mut req = hyper::Request::get(uri).header("accept", "application/json");
        if let Some(token) = &self.endpoint.token {
            req = req.header("authorization", format!("Bearer {}", token.trim()));
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| PromError::Config(e.to_string()))?;
        let unreachable = |message: String| PromError::Unreachable {
            url: self.endpoint.url.clone(),
            message,
        };
        let timeout = Duration::from_millis(self.endpoint.timeout_ms.max(1));
        let fetch = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| unreachable(error_chain(&e)))?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, PromError>((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, fetch)
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))??;
        match parse_answer(&body) {
            Err(PromError::Decode(_)) if status >= 300 => Err(PromError::Http {
                status,
                body: String::from_utf8_lossy(&body[..body.len().min(256)]).into_owned(),
            }),
            r => r,
        }
    }
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_decode_vectors_scalars_and_special_values() {
        let v = parse_answer(
            br#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"pod":"a"},"value":[1.5,"3.25"]},
                {"metric":{"pod":"b"},"value":[1.5,"NaN"]},
                {"metric":{},"value":[1.5,"+Inf"]}]}}"#,
        )
        .unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].labels["pod"], "a");
        assert_eq!(v[0].value, 3.25);
        assert!(v[1].value.is_nan());
        assert_eq!(v[2].value, f64::INFINITY);
        let s = parse_answer(
            br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"7"]}}"#,
        )
        .unwrap();
        assert_eq!(s[0].value, 7.0);
    }

    #[test]
    fn errors_keep_prometheus_words() {
        let e = parse_answer(
            br#"{"status":"error","errorType":"bad_data","error":"1:5: parse error: unexpected \")\""}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("bad_data"), "{e}");
        assert!(e.to_string().contains("parse error"), "{e}");
        assert!(!e.is_unreachable());
        for bad in [&b"not json"[..], br#"{"status":"success"}"#] {
            assert!(matches!(parse_answer(bad), Err(PromError::Decode(_))));
        }
        let range =
            parse_answer(br#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#)
                .unwrap_err();
        assert!(range.to_string().contains("matrix"), "{range}");
    }

    #[test]
    fn a_ca_bundle_without_certificates_is_a_config_error() {
        let e = PromClient::new(Endpoint {
            url: "https://p:9090".to_owned(),
            ca_bundle: Some("not a pem".to_owned()),
            ..Endpoint::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("caBundle"), "{e}");
    }
}
