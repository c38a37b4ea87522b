//! The extender's HTTP surface (axum): `POST {prefix}/filter`, `/prioritize`,
//! `/bind`, `/preempt`, and `GET /healthz`, `/readyz`.
//!
//! Requests are decoded here, answered by [`super::backend::Extender`]
//! (which calls the core) and encoded back; errors reach the wire through
//! [`error_response`] only. Bodies are limited (full-NodeList requests of a
//! 5,000-node cluster are ~14 MB; the default limit is 64 MiB).

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::backend::{Binder, Extender};
use super::wire::{
    ExtenderArgs, ExtenderBindingArgs, ExtenderBindingResult, ExtenderPreemptionArgs,
    filter_result, preemption_result, priority_list,
};
use crate::decision::time::Time;
use crate::index::convert::{self, ConvertError};

/// The default request body limit.
pub const DEFAULT_BODY_LIMIT: usize = 64 << 20;

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
            Self::Pod { .. } => "pod",
        }
    }
}

/// The one mapping of extender errors to HTTP: every error is the caller's
/// (400) with a reason; the scheduler logs it and retries the pod.
#[must_use]
pub fn error_response(e: &ExtenderError) -> Response {
    let status = match e {
        ExtenderError::Decode { .. } | ExtenderError::Pod { .. } => StatusCode::BAD_REQUEST,
    };
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        e.to_string(),
    )
        .into_response()
}

fn json<T: Serialize>(value: &T) -> Response {
    match serde_json::to_vec(value) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    verb: &'static str,
    body: &[u8],
) -> Result<T, ExtenderError> {
    serde_json::from_slice(body).map_err(|source| ExtenderError::Decode { verb, source })
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

async fn filter_handler<B: Binder>(State(ext): State<Arc<Extender<B>>>, body: Bytes) -> Response {
    let run = || -> Result<Response, ExtenderError> {
        let args: ExtenderArgs = decode("filter", &body)?;
        let pod = pod_of("filter", &args.pod)?;
        let outcome = ext.filter(&pod, &args.candidate_names());
        Ok(json(&filter_result(&args, &outcome)))
    };
    run().unwrap_or_else(|e| error_response(&e))
}

async fn prioritize_handler<B: Binder>(
    State(ext): State<Arc<Extender<B>>>,
    body: Bytes,
) -> Response {
    let run = || -> Result<Response, ExtenderError> {
        let args: ExtenderArgs = decode("prioritize", &body)?;
        let pod = pod_of("prioritize", &args.pod)?;
        Ok(json(&priority_list(
            &ext.prioritize(&pod, &args.candidate_names()),
        )))
    };
    run().unwrap_or_else(|e| error_response(&e))
}

async fn preempt_handler<B: Binder>(State(ext): State<Arc<Extender<B>>>, body: Bytes) -> Response {
    let run = || -> Result<Response, ExtenderError> {
        let args: ExtenderPreemptionArgs = decode("preempt", &body)?;
        let pod = pod_of("preempt", &args.pod)?;
        let out = ext.preempt(&pod, &args.candidate_names());
        Ok(json(&preemption_result(&args, &out.allowed)))
    };
    run().unwrap_or_else(|e| error_response(&e))
}

async fn bind_handler<B: Binder>(State(ext): State<Arc<Extender<B>>>, body: Bytes) -> Response {
    let args: ExtenderBindingArgs = match decode("bind", &body) {
        Ok(a) => a,
        Err(e) => return error_response(&e),
    };
    let error = match ext
        .bind(
            &args.pod_namespace,
            &args.pod_name,
            &args.pod_uid,
            &args.node,
        )
        .await
    {
        Ok(()) => String::new(),
        Err(reason) => reason,
    };
    json(&ExtenderBindingResult { error })
}

async fn readyz<B: Binder>(State(ext): State<Arc<Extender<B>>>) -> Response {
    if ext.is_ready() {
        (StatusCode::OK, "ok").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced").into_response()
    }
}

/// The extender's routes under `prefix` (e.g. `/scheduler`), with a body
/// limit of `body_limit` bytes.
pub fn router<B: Binder>(ext: Arc<Extender<B>>, prefix: &str, body_limit: usize) -> Router {
    let prefix = prefix.trim_end_matches('/');
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
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(ext)
}
