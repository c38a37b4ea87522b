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
                  {"name": "burst", "resource": "eci"}],
        "preemptPolicy": "BeforeNextUnit",
        "ignorePreviousPod": true,
        "ignoreTerminatingPod": false,
        "matchLabelKeys": ["pod-template-hash"],
        "whenTryNextUnits": {"policy": "TimeoutOrExceedMax", "timeout": "1h30m"},
        "manualDeletionCost": "Overwrite",
        "spillBack": {"settleTime": "10m", "maxEvictions": 2, "interval": "15m"}
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
