//! The `spillway-sim` binary as a shell runs it: warnings on stderr, and
//! output into a pipe whose reader stops early (`spillway-sim run | head`)
//! ends quietly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn scenario_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scenarios")
        .join(name)
}

/// A fresh directory for one test's files.
fn scratch(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("spillway-sim-cli-{test}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn sim() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_spillway-sim"));
    c.stdin(Stdio::null());
    c
}

/// Runs the command with stdout a pipe whose read end is closed before it
/// writes.
fn into_closed_pipe(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spillway-sim starts");
    drop(child.stdout.take());
    child.wait_with_output().expect("spillway-sim exits")
}

fn assert_quiet_success(out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("Broken pipe"), "{stderr}");
    assert!(out.status.success(), "{}, stderr: {stderr}", out.status);
}

#[test]
fn validate_run_and_plan_into_a_closed_pipe_exit_cleanly() {
    let dir = scratch("pipe");
    let burst = scenario_path("seed-burst.yaml");
    let mut validate = sim();
    validate.arg("validate").arg(&burst);
    assert_quiet_success(&into_closed_pipe(validate));
    for json in [false, true] {
        let mut run = sim();
        run.args(["run", "--duration", "1h", "-o"])
            .arg(dir.join("run"))
            .arg(&burst);
        if json {
            run.arg("--json");
        }
        assert_quiet_success(&into_closed_pipe(run));
    }
    let mut plan = sim();
    plan.arg("plan")
        .arg(&burst)
        .args(["--vary", "pools.datacenter.nodes=1..2", "--jobs", "1", "-o"])
        .arg(dir.join("plan"));
    assert_quiet_success(&into_closed_pipe(plan));
    let plan: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("plan/plan.json")).unwrap())
            .unwrap();
    for p in plan["points"].as_array().unwrap() {
        let split = p["cost_datacenter"].as_f64().unwrap() + p["cost_cloud"].as_f64().unwrap();
        assert!((split - p["cost"].as_f64().unwrap()).abs() < 1e-6, "{p}");
        assert!(p["slo_target"].as_f64().unwrap() > 0.0);
    }
    assert!(plan["warnings"].is_array());
    let html = std::fs::read_to_string(dir.join("plan/plan.html")).unwrap();
    assert!(html.contains("SLO target") && html.contains("data center"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn validate_warns_about_a_unit_no_pool_has_nodes_for() {
    let dir = scratch("warn");
    let text = std::fs::read_to_string(scenario_path("seed-burst.yaml"))
        .unwrap()
        .replace("nodeSelector: {pool: cloud}", "nodeSelector: {pool: clod}");
    let path = dir.join("typo.yaml");
    std::fs::write(&path, text).unwrap();
    let out = sim().arg("validate").arg(&path).output().unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "a warning is not an error: {stderr}");
    assert_eq!(
        stderr,
        "warning: ResourcePolicy default/llm unit \"cloud\" (#1) selects no node of any pool\n"
    );
    assert!(stdout.contains(": ok (2 pools"), "{stdout}");
}

#[test]
fn bundled_scenarios_give_no_warnings() {
    for name in ["hybrid-edge.yaml", "seed-burst.yaml", "m-large-14d.yaml"] {
        let out = sim()
            .arg("validate")
            .arg(scenario_path(name))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        assert!(stderr.is_empty(), "{name}: {stderr}");
    }
}

#[test]
fn profile_refuses_a_probe_it_cannot_bound_or_reach_and_names_why() {
    let out = sim()
        .args(["profile", "--url", "https://llm.example.com"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--url") && stderr.contains("port-forward"),
        "{stderr}"
    );

    let out = sim()
        .args([
            "profile",
            "--url",
            "http://127.0.0.1:1",
            "--prompt-tokens",
            "512",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("--prompt-tokens"),
        "{stderr}"
    );

    // Nothing listens on port 1: the bounds are printed, then the failure.
    let dir = scratch("profile");
    let out = sim()
        .args([
            "profile",
            "--url",
            "http://127.0.0.1:1",
            "--model",
            "m",
            "-o",
        ])
        .arg(dir.join("p.json"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("100 requests, at most 32 at once"),
        "{stderr}"
    );
    assert!(stderr.contains("127.0.0.1:1"), "{stderr}");
    assert!(!dir.join("p.json").exists());
    std::fs::remove_dir_all(dir).unwrap();
}
