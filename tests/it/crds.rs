//! The CRDs in `crds/` are what the Rust types generate, and their CEL rules
//! accept good manifests and reject bad ones with the field named.

use kube::CustomResourceExt;
use serde_json::{Value, json};
use spillway::crd::{ResourcePolicy, crd_files, crds};

fn repo_file(rel: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn crds_dir_matches_the_rust_types() {
    for (rel, yaml) in crd_files() {
        let on_disk = repo_file(&format!("crds/{rel}"));
        assert!(
            on_disk == yaml,
            "crds/{rel} is stale: run `cargo run -- crd --output-dir crds` and commit the result"
        );
    }
}

#[test]
fn compat_crd_has_the_same_schema_under_the_ack_group() {
    let all = crds();
    assert_eq!(all[0].spec.group, "scheduling.spillway.io");
    assert_eq!(all[1].spec.group, "scheduling.alibabacloud.com");
    assert_eq!(
        all[1].metadata.name.as_deref(),
        Some("resourcepolicies.scheduling.alibabacloud.com")
    );
    assert_eq!(all[0].spec.versions, all[1].spec.versions);
    assert_eq!(all[2].spec.names.kind, "GpuAutoscaler");
    let v = &all[0].spec.versions[0];
    assert!(
        v.subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some(),
        "status subresource"
    );
    let columns: Vec<&str> = v
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(
        columns,
        ["Strategy", "Units", "Pods", "Ready", "Conflict", "Age"]
    );
}

fn schema() -> Value {
    let crd = ResourcePolicy::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// The CEL errors the API server would return for `spec`, as `field: message`.
fn cel_errors(spec: Value) -> Vec<String> {
    let object = json!({
        "apiVersion": "scheduling.spillway.io/v1alpha1",
        "kind": "ResourcePolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": spec,
    });
    match kube_cel::Validator::new().validate(&schema(), &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn unit(extra: Value) -> Value {
    let mut u = json!({"resource": "idc", "nodeSelector": {"pool": "dc"}});
    u.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    u
}

#[test]
fn cel_accepts_the_seed_and_a_full_policy() {
    let seed: Value =
        serde_saphyr::from_str(&repo_file("tests/fixtures/resourcepolicy-qwen-chat.yaml")).unwrap();
    assert_eq!(cel_errors(seed["spec"].clone()), Vec::<String>::new());
    let full = json!({
        "selector": {"app": "llm"},
        "strategy": "required",
        "units": [unit(json!({"name": "dc", "max": 4, "podLabels": {"tier": "dc"}})),
                  {"name": "burst", "resource": "eci"},
                  {"name": "cloud", "resource": "elastic", "nodeSelector": {"pool": "cloud"}}],
        "preemptPolicy": "BeforeNextUnit",
        "ignorePreviousPod": true,
        "ignoreTerminatingPod": false,
        "matchLabelKeys": ["pod-template-hash"],
        "whenTryNextUnits": {"policy": "TimeoutOrExceedMax", "timeout": "1h30m"},
        "manualDeletionCost": "Overwrite",
        "spillBack": {"settleTime": "10m", "maxEvictions": 2, "interval": "15m"},
        "headroom": {"fillPercent": 80}
    });
    assert_eq!(cel_errors(full.clone()), Vec::<String>::new());
    let parsed: spillway::crd::ResourcePolicySpec = serde_json::from_value(full).unwrap();
    let p = parsed
        .to_policy("ns", "p", spillway::decision::Time::default())
        .unwrap();
    let sb = p.spill_back.unwrap();
    assert_eq!(
        (sb.settle.as_secs(), sb.max_evictions, sb.interval.as_secs()),
        (600, 2, 900)
    );
    assert_eq!(p.headroom.map(|h| h.fill_percent), Some(80));
}

#[test]
fn cel_rejects_each_invalid_field_by_name() {
    let cases: Vec<(Value, &str)> = vec![
        (json!({"units": []}), "at least one unit is required"),
        (
            json!({"units": [unit(json!({"max": -1}))]}),
            "max must be 0 or more",
        ),
        (
            json!({"units": [{"resource": "ecs"}]}),
            "a unit needs a nodeSelector",
        ),
        (
            json!({"units": [unit(json!({"max": 1}))], "whenTryNextUnits": {"policy": "ExceedMax", "timeout": "5m"}}),
            "timeout is only used with policy TimeoutOrExceedMax",
        ),
        (
            json!({"units": [unit(json!({"max": 1}))], "whenTryNextUnits": {"policy": "TimeoutOrExceedMax", "timeout": "5 minutes"}}),
            "timeout must be a duration",
        ),
        (
            json!({"units": [unit(json!({}))], "matchLabelKeys": ["pod-template-hash"]}),
            "matchLabelKeys is only meaningful when some unit sets max",
        ),
        (
            json!({"units": [unit(json!({}))], "ignorePreviousPod": true}),
            "ignorePreviousPod is only meaningful",
        ),
        (
            json!({"units": [unit(json!({}))], "ignoreTerminatingPod": false}),
            "ignoreTerminatingPod: false is only meaningful",
        ),
        (
            json!({"units": [unit(json!({"name": "a"})), unit(json!({"name": "a"}))]}),
            "unit names must be unique",
        ),
        (
            json!({"units": [unit(json!({}))], "spillBack": {"settleTime": "a while"}}),
            "settleTime must be a duration",
        ),
        (
            json!({"units": [unit(json!({}))], "spillBack": {"interval": "5"}}),
            "interval must be a duration",
        ),
        (
            json!({"units": [unit(json!({}))], "spillBack": {"maxEvictions": 0}}),
            "maxEvictions must be 1 or more",
        ),
        (
            json!({"units": [unit(json!({}))], "headroom": {"fillPercent": 0}}),
            "fillPercent must be between 1 and 100",
        ),
        (
            json!({"units": [unit(json!({}))], "headroom": {"fillPercent": 101}}),
            "fillPercent must be between 1 and 100",
        ),
    ];
    for (spec, want) in cases {
        let errors = cel_errors(spec.clone());
        assert!(
            errors.len() == 1 && errors[0].contains(want),
            "spec {spec} gave {errors:?}, wanted one error containing {want:?}"
        );
    }
}

#[test]
fn cel_and_core_validation_agree() {
    // Whatever CEL rejects the core's conversion rejects too (it also guards
    // the compat group and files that never met an API server).
    let specs = [
        json!({"units": [unit(json!({"max": -1}))]}),
        json!({"units": [{"resource": "ecs"}]}),
        json!({"units": [unit(json!({"max": 1}))], "whenTryNextUnits": {"policy": "ExceedMax", "timeout": "5m"}}),
        json!({"units": [unit(json!({"max": 1}))], "whenTryNextUnits": {"policy": "TimeoutOrExceedMax", "timeout": "5 minutes"}}),
        json!({"units": [unit(json!({}))], "matchLabelKeys": ["pod-template-hash"]}),
        json!({"units": [unit(json!({}))], "ignorePreviousPod": true}),
        json!({"units": [unit(json!({}))], "ignoreTerminatingPod": false}),
        json!({"units": [unit(json!({"name": "a"})), unit(json!({"name": "a"}))]}),
        json!({"units": []}),
        json!({"units": [unit(json!({}))], "spillBack": {"settleTime": "a while"}}),
        json!({"units": [unit(json!({}))], "spillBack": {"interval": "5"}}),
        json!({"units": [unit(json!({}))], "spillBack": {"maxEvictions": 0}}),
        json!({"units": [unit(json!({}))], "headroom": {"fillPercent": 0}}),
        json!({"units": [unit(json!({}))], "headroom": {"fillPercent": 101}}),
    ];
    for spec in specs {
        assert!(!cel_errors(spec.clone()).is_empty());
        let parsed: spillway::crd::ResourcePolicySpec =
            serde_json::from_value(spec.clone()).unwrap();
        assert!(
            parsed
                .to_policy("ns", "p", spillway::decision::Time::default())
                .is_err(),
            "core accepted {spec}"
        );
    }
}

fn scaler_cel_errors(spec: Value) -> Vec<String> {
    let crd = spillway::crd::gpu_autoscaler::GpuAutoscaler::crd();
    let schema = serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap();
    let object = json!({
        "apiVersion": "scheduling.spillway.io/v1alpha1",
        "kind": "GpuAutoscaler",
        "metadata": {"name": "s", "namespace": "ns"},
        "spec": spec,
    });
    match kube_cel::Validator::new().validate(&schema, &object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

fn scaler(metrics: Value) -> Value {
    json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "qwen"},
        "minReplicas": 1, "maxReplicas": 4,
        "metrics": metrics,
        "prometheus": {"url": "http://prometheus.monitoring:9090"}
    })
}

#[test]
fn gpu_autoscaler_cel_accepts_every_metric_type_and_core_agrees() {
    let spec = scaler(json!([
        {"type": "GPU", "gpu": {"metric": "DCGM_CUSTOM_PROCESS_SM_UTIL", "averageValue": 50}},
        {"type": "Pods", "pods": {"metric": "tokens_per_second", "averageValue": "900"}},
        {"type": "QueueDepth", "queueDepth": {"averageValue": 10}},
        {"type": "KVCache", "kvCache": {"averageValue": "800m"}},
        {"type": "Query", "query": {"promql": "sum(rate(x[1m]))", "value": 1}},
        {"type": "Latency", "latency": {"objective": "500ms", "quantile": "0.95", "window": "1m"}}
    ]));
    assert_eq!(scaler_cel_errors(spec.clone()), Vec::<String>::new());
    let parsed: spillway::crd::gpu_autoscaler::GpuAutoscalerSpec =
        serde_json::from_value(spec).unwrap();
    let core = parsed.to_scaler().unwrap();
    assert_eq!(core.metrics.len(), 6);
    assert_eq!(
        core.metrics[5].target,
        spillway::decision::hpa::Target::Latency {
            objective: 0.5,
            scale_down_below: 0.5
        }
    );
}

#[test]
fn gpu_autoscaler_cel_and_core_reject_each_invalid_field_by_name() {
    let gpu = json!({"type": "GPU", "gpu": {"metric": "DCGM_FI_DEV_GPU_UTIL", "averageValue": 50}});
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            scaler(json!([])),
            "at least one metric is required",
            "spec.metrics",
        ),
        (
            {
                let mut s = scaler(json!([gpu.clone()]));
                s["minReplicas"] = json!(5);
                s
            },
            "maxReplicas must be at least minReplicas",
            "spec.maxReplicas",
        ),
        (
            scaler(json!([{"type": "GPU", "queueDepth": {"averageValue": 1}}])),
            "type GPU needs a gpu section",
            "spec.metrics[0].gpu",
        ),
        (
            scaler(
                json!([{"type": "Query", "query": {"promql": "sum(x)", "value": 1, "averageValue": 1}}]),
            ),
            "set exactly one of value",
            "spec.metrics[0].query",
        ),
        (
            {
                let mut s = scaler(json!([gpu.clone()]));
                s["prometheus"]["url"] = json!("prometheus:9090");
                s
            },
            "url must start with http:// or https://",
            "spec.prometheus.url",
        ),
    ];
    for (spec, cel, field) in cases {
        let errors = scaler_cel_errors(spec.clone());
        assert!(
            errors.iter().any(|e| e.contains(cel)),
            "CEL for {spec}: {errors:?}"
        );
        let parsed: spillway::crd::gpu_autoscaler::GpuAutoscalerSpec =
            serde_json::from_value(spec.clone()).unwrap();
        let core = parsed.to_scaler().unwrap_err();
        assert!(
            core.iter().any(|e| e.field == field),
            "core for {spec}: {core:?}"
        );
    }
}

#[test]
fn gpu_autoscaler_core_checks_what_cel_cannot() {
    for (metric, field) in [
        (
            json!({"type": "Latency", "latency": {"objective": "fast"}}),
            "spec.metrics[0].latency.objective",
        ),
        (
            json!({"type": "Latency", "latency": {"objective": "1s", "quantile": "1.5"}}),
            "spec.metrics[0].latency.quantile",
        ),
        (
            json!({"type": "QueueDepth", "queueDepth": {"averageValue": 0}}),
            "spec.metrics[0].queueDepth.averageValue",
        ),
    ] {
        let parsed: spillway::crd::gpu_autoscaler::GpuAutoscalerSpec =
            serde_json::from_value(scaler(json!([metric]))).unwrap();
        let errors = parsed.to_scaler().unwrap_err();
        assert!(errors.iter().any(|e| e.field == field), "{errors:?}");
    }
}

#[test]
fn the_example_gpu_autoscaler_passes_cel_and_core_validation() {
    let doc: Value =
        serde_saphyr::from_str(&repo_file("deploy/examples/gpuautoscaler.yaml")).unwrap();
    assert_eq!(scaler_cel_errors(doc["spec"].clone()), Vec::<String>::new());
    let spec: spillway::crd::gpu_autoscaler::GpuAutoscalerSpec =
        serde_json::from_value(doc["spec"].clone()).unwrap();
    let core = spec.to_scaler().unwrap();
    assert_eq!(core.metrics.len(), 2);
    assert_eq!(core.hpa.behavior.scale_down.policies.len(), 1);
}

#[test]
fn headroom_without_an_elastic_unit_is_refused_naming_the_field() {
    let spec: spillway::crd::ResourcePolicySpec = serde_json::from_value(
        json!({"units": [unit(json!({}))], "headroom": {"fillPercent": 90}}),
    )
    .unwrap();
    let err = spec
        .to_policy("ns", "p", spillway::decision::Time::default())
        .unwrap_err();
    assert!(
        err.errors
            .iter()
            .any(|e| e.field == "spec.headroom" && e.message.contains("elastic")),
        "{err:?}"
    );
}
