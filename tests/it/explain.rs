//! `spillway explain` on example files: the report an operator reads.

use std::path::PathBuf;

use spillway::cli::{ExplainArgs, Format};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn args(policy: &str, cluster: &str, pod: &str) -> ExplainArgs {
    ExplainArgs {
        policies: vec![repo(policy)],
        cluster: vec![repo(cluster)],
        pod: if std::path::Path::new(pod).extension().is_none() {
            pod.to_owned()
        } else {
            repo(pod).display().to_string()
        },
        feasible: None,
        at: Some("2026-11-22T10:00:00Z".into()),
        output: Format::Text,
    }
}

#[test]
fn full_data_center_unit_sends_the_fifth_replica_to_the_cloud() {
    let report = spillway::explain::run(&args(
        "examples/explain/policy.yaml",
        "examples/explain/cluster.yaml",
        "examples/explain/pod.yaml",
    ))
    .unwrap();
    insta::assert_snapshot!("explain_fifth_replica", report);
}

#[test]
fn existing_pod_is_explained_as_if_rescheduled() {
    let report = spillway::explain::run(&args(
        "examples/explain/policy.yaml",
        "examples/explain/cluster.yaml",
        "llm/qwen-chat-predictor-3",
    ))
    .unwrap();
    assert!(report.contains("currently on gpu-local-2"), "{report}");
    assert!(
        report.contains("unit \"datacenter\" (#0) takes the pod"),
        "{report}"
    );
}

#[test]
fn json_output_carries_the_same_decision() {
    let mut a = args(
        "examples/explain/policy.yaml",
        "examples/explain/cluster.yaml",
        "examples/explain/pod.yaml",
    );
    a.output = Format::Json;
    let v: serde_json::Value = serde_json::from_str(&spillway::explain::run(&a).unwrap()).unwrap();
    assert_eq!(v["policy"], "llm/qwen-chat");
    assert_eq!(v["eligible"][0]["node"], "gpu-cloud-1");
    assert_eq!(v["warnings"], serde_json::json!([]), "every unit has nodes");
    assert_eq!(v["units"][0]["state"], "full (4/4)");
}

#[test]
fn given_feasible_list_replaces_the_fit_model() {
    let mut a = args(
        "examples/explain/policy.yaml",
        "examples/explain/cluster.yaml",
        "examples/explain/pod.yaml",
    );
    a.feasible = Some(vec!["gpu-local-1".into(), "cpu-1".into()]);
    let report = spillway::explain::run(&a).unwrap();
    assert!(
        report.contains("every unit is full or has no room: nodes outside every unit are eligible"),
        "{report}"
    );
    assert!(report.contains("cpu-1"), "{report}");
}

#[test]
fn seed_manifest_applies_unchanged_in_the_compat_group() {
    let dir = std::env::temp_dir().join(format!("spillway-explain-seed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cluster = std::fs::read_to_string(repo("examples/explain/cluster.yaml"))
        .unwrap()
        .replace("np-local", "npxxxxxx")
        .replace("np-cloud", "npxxxxxy")
        .replace("namespace: llm", "namespace: default");
    let cluster_path = dir.join("cluster.yaml");
    std::fs::write(&cluster_path, cluster).unwrap();
    let pod = std::fs::read_to_string(repo("examples/explain/pod.yaml"))
        .unwrap()
        .replace("namespace: llm", "namespace: default");
    let pod_path = dir.join("pod.yaml");
    std::fs::write(&pod_path, pod).unwrap();
    let a = ExplainArgs {
        policies: vec![repo("tests/fixtures/resourcepolicy-qwen-chat.yaml")],
        cluster: vec![cluster_path],
        pod: pod_path.display().to_string(),
        feasible: None,
        at: Some("2026-11-22T10:00:00Z".into()),
        output: Format::Text,
    };
    let report = spillway::explain::run(&a).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    // No max in the seed: the data-center pool takes the pod while it has room.
    assert!(report.contains("Policy:    default/qwen-chat"), "{report}");
    assert!(
        report.contains("unit \"ecs-0\" (#0) takes the pod"),
        "{report}"
    );
}

#[test]
fn invalid_policy_files_name_the_field() {
    let dir = std::env::temp_dir().join(format!("spillway-explain-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: scheduling.spillway.io/v1alpha1\nkind: ResourcePolicy\nmetadata: {name: p, namespace: llm}\nspec:\n  units:\n  - resource: idc\n    nodeSelector: {pool: a}\n    max: -2\n",
    )
    .unwrap();
    let mut a = args(
        "examples/explain/policy.yaml",
        "examples/explain/cluster.yaml",
        "examples/explain/pod.yaml",
    );
    a.policies = vec![bad];
    let err = format!("{:#}", spillway::explain::run(&a).unwrap_err());
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        err.contains("spec.units[0].max: must be 0 or more, got -2"),
        "{err}"
    );
}

#[test]
fn malformed_cluster_objects_are_skipped_with_a_note() {
    let dir =
        std::env::temp_dir().join(format!("spillway-explain-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut cluster = std::fs::read_to_string(repo("examples/explain/cluster.yaml")).unwrap();
    cluster.push_str("---\napiVersion: v1\nkind: Node\nmetadata: {name: broken}\nstatus: {allocatable: {nvidia.com/gpu: lots}}\n");
    let path = dir.join("cluster.yaml");
    std::fs::write(&path, cluster).unwrap();
    let mut a = args(
        "examples/explain/policy.yaml",
        "examples/explain/cluster.yaml",
        "examples/explain/pod.yaml",
    );
    a.cluster = vec![path];
    let report = spillway::explain::run(&a).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(report.contains("skipped a malformed Node"), "{report}");
    assert!(
        report.contains("unit \"cloud\" (#1) takes the pod"),
        "{report}"
    );
}

#[test]
fn policy_files_without_a_resource_policy_fail_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        ("empty.yaml", ""),
        ("comments.yaml", "# a policy will go here\n---\n"),
        (
            "other-kinds.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: llm}\n---\napiVersion: v1\nkind: List\nitems: []\n",
        ),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let mut a = args(
            "examples/explain/policy.yaml",
            "examples/explain/cluster.yaml",
            "examples/explain/pod.yaml",
        );
        a.policies = vec![path.clone()];
        let err = format!("{:#}", spillway::explain::run(&a).unwrap_err());
        assert_eq!(err, format!("no ResourcePolicy in {}", path.display()));
    }
}

/// The example policy with its cloud unit selecting a node pool the
/// snapshot has no node of.
fn policy_with_a_unit_without_nodes(dir: &std::path::Path) -> PathBuf {
    let text = std::fs::read_to_string(repo("examples/explain/policy.yaml"))
        .unwrap()
        .replace("np-cloud", "np-cloud-typo");
    let path = dir.join("policy.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_unit_without_nodes_is_warned_about_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = args(
        "examples/explain/policy.yaml",
        "examples/explain/cluster.yaml",
        "examples/explain/pod.yaml",
    );
    a.policies = vec![policy_with_a_unit_without_nodes(dir.path())];
    let warning =
        "ResourcePolicy llm/qwen-chat unit \"cloud\" (#1) selects no node of the cluster snapshot";
    let report = spillway::explain::run(&a).unwrap();
    assert!(
        report.contains(&format!("\nWarnings:\n  {warning}\n")),
        "{report}"
    );
    a.output = Format::Json;
    let v: serde_json::Value = serde_json::from_str(&spillway::explain::run(&a).unwrap()).unwrap();
    assert_eq!(v["warnings"], serde_json::json!([warning]));
}
