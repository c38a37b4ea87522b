//! The extender's HTTP surface (axum): `POST {prefix}/filter`, `/prioritize`,
//! `/bind`, `/preempt`, and `GET /healthz`, `/readyz`, `/metrics`.
//!
//! Requests are decoded here, answered by [`super::backend::Extender`]
//! (which calls the core) and encoded back; errors reach the wire through
//! [`error_response`] only. Bodies are limited (full-NodeList requests of a
//! 5,000-node cluster are ~14 MB; the default limit is 64 MiB).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::backend::{Binder, Extender};
use super::wire::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderFilterResult,
    ExtenderPreemptionArgs, filter_answer, preemption_result, priority_answer,
};
use crate::decision::time::Time;
use crate::index::convert::{self, ConvertError};

/// The default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 64 << 20;

/// The default time limit of one request: under the scheduler's default
/// `httpTimeout` of 5 s, so the scheduler sees our reason, not its timeout.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(4);

/// How the extender's routes are mounted.
#[derive(Clone, Debug)]
pub struct RouterConfig {
    /// URL prefix of the verbs (the scheduler's `urlPrefix` path), e.g. `/scheduler`.
    pub prefix: String,
    /// Largest accepted request body, in bytes (larger: 413).
    pub body_limit: usize,
    /// Time limit of one request (exceeded: 503 with a reason).
    pub timeout: Duration,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            prefix: "/scheduler".to_owned(),
            body_limit: DEFAULT_BODY_LIMIT,
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// The metric label of an error answer, carried from the handler to the
/// observing middleware in the response's extensions.
#[derive(Clone, Copy, Debug)]
struct ErrorReason(&'static str);

/// Why a request could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum ExtenderError {
    /// The body is not the JSON this verb takes.
    #[error("malformed {verb} request: {source}")]
    Decode {
        /// The verb.
        verb: &'static str,
        /// The JSON error (names the field and position).
        #[source]
        source: serde_json::Error,
    },
    /// The answer cannot be encoded (not expected: every answer type is
    /// plain data).
    #[error("encoding the answer: {source}")]
    Encode {
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The embedded pod cannot be converted (e.g. a malformed quantity).
    #[error("pod in {verb} request: {source}")]
    Pod {
        /// The verb.
        verb: &'static str,
        /// The conversion error.
        #[source]
        source: ConvertError,
    },
}

impl ExtenderError {
    /// A stable label for metrics.
    #[must_use]
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Decode { .. } => "decode",
            Self::Encode { .. } => "encode",
            Self::Pod { .. } => "pod",
        }
    }
}

/// The one mapping of extender errors to HTTP: bad input is the caller's
/// (400) with a reason; the scheduler logs it and retries the pod.
#[must_use]
pub fn error_response(e: &ExtenderError) -> Response {
    let status = match e {
        ExtenderError::Decode { .. } | ExtenderError::Pod { .. } => StatusCode::BAD_REQUEST,
        ExtenderError::Encode { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        e.to_string(),
    )
        .into_response();
    resp.extensions_mut().insert(ErrorReason(e.metric_label()));
    resp
}

fn json<T: Serialize>(value: &T) -> Response {
    json_response(encode(value))
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ExtenderError> {
    serde_json::to_vec(value).map_err(|source| ExtenderError::Encode { source })
}

fn decode<'a, T: serde::Deserialize<'a>>(
    verb: &'static str,
    body: &'a [u8],
) -> Result<T, ExtenderError> {
    serde_json::from_slice(body).map_err(|source| ExtenderError::Decode { verb, source })
}

/// A filter or prioritize body ([`ExtenderArgs::from_slice`]).
fn decode_args<'a>(verb: &'static str, body: &'a [u8]) -> Result<ExtenderArgs<'a>, ExtenderError> {
    ExtenderArgs::from_slice(body).map_err(|source| ExtenderError::Decode { verb, source })
}

fn pod_of(
    verb: &'static str,
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Result<crate::decision::snapshot::Pod, ExtenderError> {
    let fallback = format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    );
    convert::pod(pod, Some(&fallback), Time::default())
        .map_err(|source| ExtenderError::Pod { verb, source })
}

/// Answers a filter request body: decode, core decision (with the
/// reservation), encode. The handler and the benchmark share it.
///
/// # Errors
/// A body or pod that cannot be decoded.
pub fn answer_filter<B: Binder>(ext: &Extender<B>, body: &[u8]) -> Result<Vec<u8>, ExtenderError> {
    let args = decode_args("filter", body)?;
    let pod = pod_of("filter", &args.pod)?;
    if !ext.is_synced() {
        return encode(&ExtenderFilterResult {
            error: ext.refusal("filter"),
            ..ExtenderFilterResult::default()
        });
    }
    let outcome = ext.filter(&pod, &args.candidate_names());
    Ok(filter_answer(&args, &outcome))
}

/// Answers a prioritize request body.
///
/// # Errors
/// A body or pod that cannot be decoded.
pub fn answer_prioritize<B: Binder>(
    ext: &Extender<B>,
    body: &[u8],
) -> Result<Vec<u8>, ExtenderError> {
    let args = decode_args("prioritize", body)?;
    let pod = pod_of("prioritize", &args.pod)?;
    Ok(priority_answer(
        &ext.prioritize(&pod, &args.candidate_names()),
    ))
}

/// Answers a preempt request body.
///
/// # Errors
/// A body or pod that cannot be decoded.
pub fn answer_preempt<B: Binder>(ext: &Extender<B>, body: &[u8]) -> Result<Vec<u8>, ExtenderError> {
    let args: ExtenderPreemptionArgs = decode("preempt", body)?;
    let pod = pod_of("preempt", &args.pod)?;
    if !ext.is_synced() {
        // No candidate: evicting on an incomplete index could free room in
        // a unit the pod may not use.
        ext.refusal("preempt");
        return encode(&preemption_result(&args, &[]));
    }
    let out = ext.preempt(&pod, &args.candidate_names());
    encode(&preemption_result(&args, &out.allowed))
}

fn json_response(answer: Result<Vec<u8>, ExtenderError>) -> Response {
    match answer {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error_response(&e),
    }
}

async fn filter_handler<B: Binder>(State(ext): State<Arc<Extender<B>>>, body: Bytes) -> Response {
    json_response(answer_filter(&ext, &body))
}

async fn prioritize_handler<B: Binder>(
    State(ext): State<Arc<Extender<B>>>,
    body: Bytes,
) -> Response {
    json_response(answer_prioritize(&ext, &body))
}

async fn preempt_handler<B: Binder>(State(ext): State<Arc<Extender<B>>>, body: Bytes) -> Response {
    json_response(answer_preempt(&ext, &body))
}

async fn bind_handler<B: Binder>(State(ext): State<Arc<Extender<B>>>, body: Bytes) -> Response {
    let args: ExtenderBindingArgs = match decode("bind", &body) {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    // The bind runs to completion in its own task even if the scheduler
    // gives up on the request: the reservation is then confirmed or released
    // whatever happens to the connection.
    let task = tokio::spawn(async move {
        ext.bind(
            &args.pod_namespace,
            &args.pod_name,
            &args.pod_uid,
            &args.node,
        )
        .await
    });
    let error = match task.await {
        Ok(Ok(())) => String::new(),
        Ok(Err(reason)) => reason,
        Err(e) => format!("bind task failed: {e}"),
    };
    let failed = !error.is_empty();
    let mut resp = json(&ExtenderBindingResult { error });
    if failed {
        resp.extensions_mut().insert(ErrorReason("bind"));
    }
    resp
}

async fn readyz<B: Binder>(State(ext): State<Arc<Extender<B>>>) -> Response {
    if ext.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
    }
}

async fn metrics<B: Binder>(State(ext): State<Arc<Extender<B>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ext.metrics().render(),
    )
        .into_response()
}

#[derive(Clone)]
struct Observe {
    metrics: super::metrics::Metrics,
    prefix: String,
    timeout: Duration,
}

fn verb_of(path: &str, prefix: &str) -> Option<&'static str> {
    match path.strip_prefix(prefix)?.trim_start_matches('/') {
        "filter" => Some("filter"),
        "prioritize" => Some("prioritize"),
        "bind" => Some("bind"),
        "preempt" => Some("preempt"),
        _ => None,
    }
}

/// Per-verb count, latency and errors, and the request time limit.
async fn observe(State(obs): State<Observe>, req: Request, next: Next) -> Response {
    let Some(verb) = verb_of(req.uri().path(), &obs.prefix) else {
        return next.run(req).await;
    };
    let start = Instant::now();
    obs.metrics.requests.with_label_values(&[verb]).inc();
    let resp = if let Ok(resp) = tokio::time::timeout(obs.timeout, next.run(req)).await {
        resp
    } else {
        let mut resp = (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{verb} took longer than {:?}", obs.timeout),
        )
            .into_response();
        resp.extensions_mut().insert(ErrorReason("timeout"));
        resp
    };
    obs.metrics
        .latency
        .with_label_values(&[verb])
        .observe(start.elapsed().as_secs_f64());
    let reason = match resp.extensions().get::<ErrorReason>() {
        Some(ErrorReason(r)) => Some(*r),
        None if resp.status() == StatusCode::PAYLOAD_TOO_LARGE => Some("too_large"),
        None if !resp.status().is_success() => Some("http"),
        None => None,
    };
    if let Some(reason) = reason {
        obs.metrics.errors.with_label_values(&[verb, reason]).inc();
    }
    resp
}

/// The operational routes alone (`/metrics`, `/healthz`, `/readyz`), for a
/// plain-HTTP port that Prometheus and the kubelet's probes reach.
pub fn ops_router<B: Binder>(ext: Arc<Extender<B>>) -> Router {
    Router::new()
        .route("/metrics", get(metrics::<B>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<B>))
        .with_state(ext)
}

/// The extender's routes: the four verbs under `config.prefix` (e.g.
/// `/scheduler`) plus the operational routes, with the body limit, the time
/// limit and the per-verb metrics.
pub fn router<B: Binder>(ext: Arc<Extender<B>>, config: &RouterConfig) -> Router {
    let prefix = config.prefix.trim_end_matches('/');
    let obs = Observe {
        metrics: ext.metrics().clone(),
        prefix: prefix.to_owned(),
        timeout: config.timeout,
    };
    Router::new()
        .route(&format!("{prefix}/filter"), post(filter_handler::<B>))
        .route(
            &format!("{prefix}/prioritize"),
            post(prioritize_handler::<B>),
        )
        .route(&format!("{prefix}/bind"), post(bind_handler::<B>))
        .route(&format!("{prefix}/preempt"), post(preempt_handler::<B>))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz::<B>))
        .route("/metrics", get(metrics::<B>))
        .layer(DefaultBodyLimit::max(config.body_limit))
        .layer(middleware::from_fn_with_state(obs, observe))
        .with_state(ext)
}
