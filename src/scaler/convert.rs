//! `spillway scaler convert`: autoscaling/v2 HorizontalPodAutoscaler
//! manifests in, GpuAutoscaler manifests out, each preceded by comments
//! saying what did not carry over or needs checking (the mapping is
//! [`crate::crd::hpa_convert`]).

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use serde_json::json;

use crate::crd::gpu_autoscaler::{PrometheusSpec, SecretKeyRef};
use crate::crd::hpa_convert::{HorizontalPodAutoscalerSpec, from_hpa};
use crate::crd::{GROUP, VERSION};

/// Arguments of `spillway scaler convert`.
#[derive(Debug, Args)]
pub struct ConvertArgs {
    /// HPA manifests (YAML or JSON; several documents or a List per file).
    #[arg(long = "filename", short = 'f', required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The Prometheus the GpuAutoscalers read (an HPA names none).
    #[arg(
        long,
        env = "SPILLWAY_PROMETHEUS_URL",
        default_value = "http://prometheus-operated.monitoring.svc:9090"
    )]
    pub prometheus_url: String,
    /// A Secret (in each autoscaler's namespace) whose `token` key holds a
    /// bearer token for Prometheus.
    #[arg(long)]
    pub bearer_token_secret: Option<String>,
}

/// Converts every HPA in the files; other kinds are an error naming them.
///
/// # Errors
/// Unreadable files, a document that is not an autoscaling/v2 HPA, or an
/// HPA of which nothing usable carries over (every metric CPU or memory).
pub fn run(args: &ConvertArgs) -> anyhow::Result<String> {
    let prometheus = PrometheusSpec {
        url: args.prometheus_url.clone(),
        bearer_token_secret: args.bearer_token_secret.as_ref().map(|name| SecretKeyRef {
            name: name.clone(),
            key: None,
        }),
        ..PrometheusSpec::default()
    };
    let mut out = Vec::new();
    for path in &args.files {
        for (i, doc) in crate::explain::documents(path)?.into_iter().enumerate() {
            let origin = format!("{} (document {})", path.display(), i + 1);
            let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
            let api = doc
                .get("apiVersion")
                .and_then(|k| k.as_str())
                .unwrap_or_default();
            anyhow::ensure!(
                kind == "HorizontalPodAutoscaler" && api == "autoscaling/v2",
                "{origin}: expected an autoscaling/v2 HorizontalPodAutoscaler, found {api} {kind}"
            );
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let namespace = doc["metadata"]["namespace"].as_str().map(str::to_owned);
            let spec: HorizontalPodAutoscalerSpec = serde_json::from_value(doc["spec"].clone())
                .with_context(|| format!("{origin}: spec"))?;
            let converted = from_hpa(&spec, &prometheus);
            if let Err(errors) = converted.spec.to_scaler() {
                let errors: Vec<String> = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.field, e.message))
                    .collect();
                anyhow::bail!(
                    "{origin}: HorizontalPodAutoscaler {name} does not convert: {}\n  notes: {}",
                    errors.join("; "),
                    converted.notes.join("\n         ")
                );
            }
            let mut metadata = json!({"name": name});
            if let Some(ns) = namespace {
                metadata["namespace"] = json!(ns);
            }
            let manifest = json!({
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "kind": "GpuAutoscaler",
                "metadata": metadata,
                "spec": converted.spec,
            });
            let mut text = format!("# Converted from HorizontalPodAutoscaler {name} ({origin}).\n");
            if !converted.notes.is_empty() {
                text.push_str("# Check before applying:\n");
                for n in &converted.notes {
                    text.push_str("# - ");
                    text.push_str(n);
                    text.push('\n');
                }
            }
            text.push_str(
                &serde_saphyr::to_string(&manifest).context("writing the GpuAutoscaler")?,
            );
            out.push(text);
        }
    }
    Ok(out.join("---\n"))
}
