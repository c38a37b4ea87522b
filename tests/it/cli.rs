//! The `spillway` binary as a shell runs it: output into a pipe whose reader
//! stops early (`spillway crd | head`) ends quietly.

use std::path::PathBuf;
use std::process::{Command, Stdio};

fn repo(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// Runs `spillway ARGS` with stdout a pipe whose read end is closed before
/// the command writes; returns the exit status and stderr.
fn run_into_closed_pipe(args: &[&str]) -> (std::process::ExitStatus, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spillway starts");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("spillway exits");
    (
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_quiet_success(args: &[&str]) {
    let (status, stderr) = run_into_closed_pipe(args);
    assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    assert!(!stderr.contains("Broken pipe"), "{args:?}: {stderr}");
    assert!(status.success(), "{args:?}: {status}, stderr: {stderr}");
}

#[test]
fn crd_into_a_closed_pipe_exits_cleanly() {
    assert_quiet_success(&["crd"]);
}

#[test]
fn explain_into_a_closed_pipe_exits_cleanly() {
    let policy = repo("examples/explain/policy.yaml");
    let cluster = repo("examples/explain/cluster.yaml");
    let pod = repo("examples/explain/pod.yaml");
    for output in ["text", "json"] {
        assert_quiet_success(&[
            "explain",
            "--policy",
            policy.to_str().unwrap(),
            "--cluster",
            cluster.to_str().unwrap(),
            "--pod",
            pod.to_str().unwrap(),
            "--output",
            output,
        ]);
    }
}

#[test]
fn help_into_a_closed_pipe_exits_cleanly() {
    assert_quiet_success(&["--help"]);
}

#[test]
fn explain_with_an_empty_policy_file_fails_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "# nothing here yet\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(["explain", "--policy"])
        .arg(&empty)
        .arg("--cluster")
        .arg(repo("examples/explain/cluster.yaml"))
        .arg("--pod")
        .arg(repo("examples/explain/pod.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("no ResourcePolicy in {}", empty.display())),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

fn spillway(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_spillway"))
        .args(args)
        .output()
        .expect("spillway runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn scaler_convert_turns_the_seed_hpa_into_a_valid_gpu_autoscaler() {
    let seed = repo("tests/fixtures/hpa-num-requests-waiting.yaml");
    let (ok, out, err) = spillway(&[
        "scaler",
        "convert",
        "-f",
        seed.to_str().unwrap(),
        "--prometheus-url",
        "http://prom.monitoring:9090",
    ]);
    assert!(ok, "{err}");
    assert!(
        out.contains("# - spec.metrics[0]: reads the series \"num_requests_waiting\""),
        "{out}"
    );
    let doc: serde_json::Value = serde_saphyr::from_str(&out).unwrap();
    assert_eq!(doc["kind"], "GpuAutoscaler");
    assert_eq!(doc["metadata"]["namespace"], "default");
    let spec: spillway::crd::gpu_autoscaler::GpuAutoscalerSpec =
        serde_json::from_value(doc["spec"].clone()).unwrap();
    let core = spec.to_scaler().unwrap();
    assert_eq!((core.hpa.min_replicas, core.hpa.max_replicas), (1, 3));
    assert_eq!(spec.prometheus.url, "http://prom.monitoring:9090");
}

#[test]
fn scaler_convert_refuses_other_kinds_and_hpas_with_nothing_to_carry_over() {
    let dir = tempfile::tempdir().unwrap();
    let policy = repo("tests/fixtures/resourcepolicy-qwen-chat.yaml");
    let (ok, _, err) = spillway(&["scaler", "convert", "-f", policy.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("expected an autoscaling/v2 HorizontalPodAutoscaler, found"),
        "{err}"
    );
    let cpu = dir.path().join("cpu.yaml");
    std::fs::write(
        &cpu,
        "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: web}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}\n  maxReplicas: 4\n  metrics:\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 80}}\n",
    )
    .unwrap();
    let (ok, out, err) = spillway(&["scaler", "convert", "-f", cpu.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("spec.metrics: at least one metric is required"),
        "{err}"
    );
    assert!(
        err.contains("a Resource metric (CPU or memory) is not carried over"),
        "{err}"
    );
}
