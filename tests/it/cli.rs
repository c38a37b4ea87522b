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
