//! The replica scaler against a real Prometheus (see `prom.rs`) and the
//! in-process fake API server: HPA conformance, Prometheus outages, bad
//! input, drain-aware scale-down.

use std::fmt::Write as _;
use std::time::Duration;

use serde_json::{Value, json};
use spillway::crd::gpu_autoscaler::PrometheusSpec;
use spillway::crd::hpa_convert::{HorizontalPodAutoscalerSpec, from_hpa};
use spillway::decision::Time;
use spillway::scaler::Scaler;

use super::apiserver::FakeCluster;
use super::prom::{Exporter, Prometheus};

const GA: &str = "scheduling.spillway.io/gpuautoscalers";
const DEPLOYMENTS: &str = "apps/deployments";
const T0: i64 = 1_800_000_000;

fn at(sync: i64) -> Time {
    Time::from_secs(T0 + 15 * sync)
}

fn deployment(ns: &str, replicas: u32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": "llm", "namespace": ns, "uid": format!("dep-{ns}")},
           "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": ns}}}})
}

fn pod(ns: &str, i: usize, ready: bool, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": format!("{ns}-{i}"), "namespace": ns, "uid": format!("uid-{ns}-{i}"),
                        "labels": {"app": ns}, "annotations": annotations,
                        "creationTimestamp": format!("2026-01-01T00:{i:02}:00Z")},
           "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "vllm"}]},
           "status": {"phase": "Running",
                      "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn autoscaler(ns: &str, url: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["scaleTargetRef"] = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "llm"});
    spec["prometheus"] = json!({"url": url});
    json!({"apiVersion": "scheduling.spillway.io/v1alpha1", "kind": "GpuAutoscaler",
           "metadata": {"name": "scaler", "namespace": ns, "uid": format!("ga-{ns}"), "generation": 1},
           "spec": spec})
}

fn queue(avg: f64) -> Value {
    json!({"type": "QueueDepth", "queueDepth": {"averageValue": avg.to_string()}})
}

fn replicas(cluster: &FakeCluster, ns: &str) -> u32 {
    let d = cluster
        .objects(DEPLOYMENTS)
        .into_iter()
        .find(|d| d["metadata"]["namespace"] == ns)
        .unwrap();
    u32::try_from(d["spec"]["replicas"].as_u64().unwrap()).unwrap()
}

fn status(cluster: &FakeCluster, ns: &str) -> Value {
    cluster
        .objects(GA)
        .into_iter()
        .find(|d| d["metadata"]["namespace"] == ns)
        .unwrap()["status"]
        .clone()
}

/// `(status, reason, message)` of condition `type_`.
fn condition(cluster: &FakeCluster, ns: &str, type_: &str) -> (String, String, String) {
    let s = status(cluster, ns);
    let c = s["conditions"]
        .as_array()
        .unwrap_or_else(|| panic!("{ns}: no conditions in {s}"))
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("{ns}: no {type_} in {s}"))
        .clone();
    (
        c["status"].as_str().unwrap().to_owned(),
        c["reason"].as_str().unwrap().to_owned(),
        c["message"].as_str().unwrap_or_default().to_owned(),
    )
}

fn scaler(cluster: &FakeCluster) -> Scaler {
    Scaler::new(
        cluster.client(),
        kube::runtime::events::Reporter {
            controller: "spillway-scaler".into(),
            instance: Some("test".into()),
        },
        &prometheus::Registry::new(),
    )
}

/// One case of the conformance table: a Deployment at `replicas` in its
/// own namespace, its pods with their queue depth (`None`: no series),
/// the autoscaler, and the replicas expected after given syncs.
struct Case {
    ns: &'static str,
    what: &'static str,
    replicas: u32,
    /// (ready, queue depth).
    pods: Vec<(bool, Option<f64>)>,
    spec: Value,
    /// (sync index, replicas after it).
    want: Vec<(usize, u32)>,
    /// After the first sync: (condition, status, reason).
    condition: Option<(&'static str, &'static str, &'static str)>,
}

fn ready(values: &[f64]) -> Vec<(bool, Option<f64>)> {
    values.iter().map(|v| (true, Some(*v))).collect()
}

fn seed_hpa() -> HorizontalPodAutoscalerSpec {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/hpa-num-requests-waiting.yaml"),
    )
    .unwrap();
    let doc: Value = serde_saphyr::from_str(&text).unwrap();
    serde_json::from_value(doc["spec"].clone()).unwrap()
}

fn seed_converted() -> Value {
    let c = from_hpa(
        &seed_hpa(),
        &PrometheusSpec {
            url: "http://unused".into(),
            ..PrometheusSpec::default()
        },
    );
    let mut v = serde_json::to_value(&c.spec).unwrap();
    v.as_object_mut().unwrap().remove("prometheus");
    v.as_object_mut().unwrap().remove("scaleTargetRef");
    v
}

fn cases() -> Vec<Case> {
    let no_down_window = json!({"scaleDown": {"stabilizationWindowSeconds": 0}});
    vec![
        Case {
            ns: "c01",
            what: "within tolerance (ratio 1.05): no change",
            replicas: 4,
            pods: ready(&[10.5; 4]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)]}),
            want: vec![(0, 4)],
            condition: Some(("ScalingLimited", "False", "DesiredWithinRange")),
        },
        Case {
            ns: "c02",
            what: "scale-up by the default policies (max of +100 %, +4)",
            replicas: 2,
            pods: ready(&[30.0, 30.0]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)]}),
            want: vec![(0, 6), (1, 6)],
            condition: Some(("AbleToScale", "True", "SucceededRescale")),
        },
        Case {
            ns: "c03",
            what: "scale-up policy Pods 1 per 60 s",
            replicas: 2,
            pods: ready(&[30.0, 30.0]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)],
                         "behavior": {"scaleUp": {"policies": [{"type": "Pods", "value": 1, "periodSeconds": 60}]}}}),
            want: vec![(0, 3), (3, 3), (4, 4), (8, 5)],
            condition: Some(("ScalingLimited", "True", "ScaleUpLimit")),
        },
        Case {
            ns: "c04",
            what: "selectPolicy Min picks the smaller of +100 % and +1",
            replicas: 2,
            pods: ready(&[30.0, 30.0]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)],
                         "behavior": {"scaleUp": {"selectPolicy": "Min", "policies": [
                             {"type": "Percent", "value": 100, "periodSeconds": 15},
                             {"type": "Pods", "value": 1, "periodSeconds": 15}]}}}),
            want: vec![(0, 3), (1, 4)],
            condition: None,
        },
        Case {
            ns: "c05",
            what: "scale-down waits out the default 300 s window",
            replicas: 6,
            pods: ready(&[1.0; 6]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)]}),
            want: vec![(0, 6), (19, 6), (20, 1)],
            condition: Some(("AbleToScale", "True", "ScaleDownStabilized")),
        },
        Case {
            ns: "c06",
            what: "scale-down policy Pods 1 per 15 s, no window",
            replicas: 6,
            pods: ready(&[1.0; 6]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)],
                         "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0,
                             "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}}}),
            want: vec![(0, 5), (1, 4), (4, 1)],
            condition: Some(("ScalingLimited", "True", "ScaleDownLimit")),
        },
        Case {
            ns: "c07",
            what: "several metrics: the largest proposal wins (GPU 5 over queue 1)",
            replicas: 2,
            pods: ready(&[5.0, 5.0]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0),
                {"type": "GPU", "gpu": {"metric": "DCGM_FI_DEV_GPU_UTIL", "averageValue": 40}}]}),
            want: vec![(0, 5)],
            condition: None,
        },
        Case {
            ns: "c08",
            what: "a failed metric blocks the scale-down the other proposes",
            replicas: 4,
            pods: ready(&[1.0; 4]),
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0),
                {"type": "Query", "query": {"promql": "sum(spillway_test_absent_series)", "value": 1}}],
                "behavior": no_down_window}),
            want: vec![(0, 4), (5, 4)],
            condition: Some(("ScalingActive", "False", "FailedGetPrometheusMetrics")),
        },
        Case {
            ns: "c09",
            what: "a pod without its series counts at the target on a scale-down",
            replicas: 4,
            pods: vec![
                (true, Some(2.0)),
                (true, Some(2.0)),
                (true, Some(2.0)),
                (true, None),
            ],
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)], "behavior": no_down_window}),
            // (2 + 2 + 2 + 10) / 10 → 2, where 6 / 10 over three pods would give 1.
            want: vec![(0, 2)],
            condition: None,
        },
        Case {
            ns: "c10",
            what: "a not-ready pod counts as 0 on a scale-up",
            replicas: 3,
            pods: vec![(true, Some(20.0)), (true, Some(20.0)), (false, Some(50.0))],
            spec: json!({"maxReplicas": 10, "metrics": [queue(10.0)]}),
            // 40 / 10 → 4 (the unready pod's 50 is not read).
            want: vec![(0, 4)],
            condition: None,
        },
        Case {
            ns: "c11",
            what: "a DCGM series relabelled exported_pod, averaged over each pod's GPUs",
            replicas: 2,
            pods: vec![(true, None), (true, None)],
            spec: json!({"maxReplicas": 10, "metrics": [
                {"type": "GPU", "gpu": {"metric": "DCGM_CUSTOM_PROCESS_SM_UTIL", "averageValue": 40}}]}),
            want: vec![(0, 4)],
            condition: None,
        },
        Case {
            ns: "c12",
            what: "maxReplicas clamps a scale-up",
            replicas: 3,
            pods: ready(&[100.0; 3]),
            spec: json!({"maxReplicas": 5, "metrics": [queue(10.0)]}),
            want: vec![(0, 5)],
            condition: Some(("ScalingLimited", "True", "TooManyReplicas")),
        },
        Case {
            ns: "c13",
            what: "replicas set above maxReplicas by hand come down to it",
            replicas: 8,
            pods: ready(&[10.0; 8]),
            spec: json!({"maxReplicas": 5, "metrics": [queue(10.0)]}),
            want: vec![(0, 5)],
            condition: Some(("ScalingLimited", "True", "TooManyReplicas")),
        },
        Case {
            ns: "c14",
            what: "replicas set to 0 by hand: scaling is disabled",
            replicas: 0,
            pods: vec![],
            spec: json!({"minReplicas": 1, "maxReplicas": 5, "metrics": [queue(10.0)]}),
            want: vec![(0, 0), (3, 0)],
            condition: Some(("ScalingActive", "False", "ScalingDisabled")),
        },
        Case {
            ns: "c15",
            what: "the seed HPA, converted: 25 waiting on one pod → 3 (its max)",
            replicas: 1,
            pods: vec![],
            spec: seed_converted(),
            want: vec![(0, 3)],
            condition: None,
        },
        Case {
            ns: "c16",
            what: "the seed HPA, converted: 4 waiting on each of 3 pods → 2 after the window",
            replicas: 3,
            pods: vec![],
            spec: seed_converted(),
            want: vec![(0, 3), (20, 2)],
            condition: None,
        },
    ]
}

/// The exporter pages for the cases: vLLM queue depth per pod on the
/// serving page, and the seed's NIM series and DCGM series (two GPUs per
/// pod) on theirs.
fn pages(cases: &[Case]) -> (String, String) {
    let mut serving = String::from("# TYPE vllm:num_requests_waiting gauge\n");
    for c in cases {
        for (i, (_, v)) in c.pods.iter().enumerate() {
            if let Some(v) = v {
                let _ = writeln!(
                    serving,
                    "vllm:num_requests_waiting{{namespace=\"{}\",pod=\"{}-{i}\"}} {v}",
                    c.ns, c.ns
                );
            }
        }
    }
    serving.push_str("# TYPE num_requests_waiting gauge\nnum_requests_waiting{namespace=\"c15\",pod=\"c15-0\"} 25\n");
    for i in 0..3 {
        let _ = writeln!(
            serving,
            "num_requests_waiting{{namespace=\"c16\",pod=\"c16-{i}\"}} 4"
        );
    }
    let mut dcgm = String::new();
    for (gpu, (p0, p1)) in [(70, 60), (90, 100)].iter().enumerate() {
        let _ = write!(
            dcgm,
            "DCGM_CUSTOM_PROCESS_SM_UTIL{{gpu=\"{gpu}\",namespace=\"c11\",pod=\"c11-0\"}} {p0}\n\
             DCGM_CUSTOM_PROCESS_SM_UTIL{{gpu=\"{gpu}\",namespace=\"c11\",pod=\"c11-1\"}} {p1}\n"
        );
    }
    dcgm.push_str(
        "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",namespace=\"c07\",pod=\"c07-0\"} 100\n\
         DCGM_FI_DEV_GPU_UTIL{gpu=\"0\",namespace=\"c07\",pod=\"c07-1\"} 100\n\
         DCGM_FI_DEV_GPU_UTIL{gpu=\"0\"} 0\n",
    );
    (serving, dcgm)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_conformance_through_a_real_prometheus() {
    let cases = cases();
    let exporter = Exporter::start().await;
    let (serving, dcgm) = pages(&cases);
    exporter.set_serving(&serving);
    exporter.set_dcgm(&dcgm);
    let prom = Prometheus::start(&exporter).await;
    // The renamed labels are what the DCGM queries must cope with.
    prom.wait_for(
        "count(DCGM_CUSTOM_PROCESS_SM_UTIL{exported_pod=\"c11-0\", pod=\"dcgm-exporter-x\"})",
        2.0,
    )
    .await;
    prom.wait_for("count(num_requests_waiting)", 4.0).await;

    let cluster = FakeCluster::default();
    for c in &cases {
        cluster.apply(DEPLOYMENTS, deployment(c.ns, c.replicas));
        let n = match c.ns {
            "c11" => 2,
            "c15" => 1,
            "c16" => 3,
            _ => c.pods.len(),
        };
        for i in 0..n {
            let ready = c.pods.get(i).is_none_or(|p| p.0);
            cluster.apply("pods", pod(c.ns, i, ready, json!({})));
        }
        cluster.apply(GA, autoscaler(c.ns, &prom.url(), c.spec.clone()));
    }
    let mut scaler = scaler(&cluster);
    let last = cases
        .iter()
        .flat_map(|c| c.want.iter().map(|w| w.0))
        .max()
        .unwrap();
    let mut failures = Vec::new();
    let mut first_queries = 0;
    for sync in 0..=last {
        let report = scaler.sync(at(i64::try_from(sync).unwrap())).await;
        if sync == 0 {
            assert_eq!(report.autoscalers, cases.len());
            first_queries = report.queries;
            for c in &cases {
                if let Some((type_, want_status, want_reason)) = c.condition {
                    let (s, r, m) = condition(&cluster, c.ns, type_);
                    if (s.as_str(), r.as_str()) != (want_status, want_reason) {
                        failures.push(format!(
                            "{} ({}): {type_} {s}/{r} ({m}), want {want_status}/{want_reason}",
                            c.ns, c.what
                        ));
                    }
                }
            }
        }
        for c in &cases {
            for (when, want) in &c.want {
                let got = replicas(&cluster, c.ns);
                if *when == sync && got != *want {
                    failures.push(format!(
                        "{} ({}): {got} replicas after sync {sync}, want {want}; status {}",
                        c.ns,
                        c.what,
                        status(&cluster, c.ns)
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // One query per per-pod series for all 16 autoscalers (vLLM and NIM
    // queue depth, vLLM running for the scale-down order, two DCGM
    // series) plus c08's own query.
    assert_eq!(first_queries, 6);
    // Every rescale left an Event naming the new size.
    let events = cluster.objects("events.k8s.io/events");
    assert!(
        events.iter().any(|e| e["reason"] == "SuccessfulRescale"
            && e["note"]
                .as_str()
                .is_some_and(|n| n.starts_with("New size: 6"))
            && e["regarding"]["namespace"] == "c02"),
        "{events:?}"
    );
    // The Targets column.
    assert_eq!(
        status(&cluster, "c01")["targets"],
        "10.5/10 (queueDepth)",
        "{}",
        status(&cluster, "c01")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_stopped_mid_test_never_scales_down_and_recovers_after_backoff() {
    let exporter = Exporter::start().await;
    exporter.set_serving(
        "vllm:num_requests_waiting{namespace=\"down\",pod=\"down-0\"} 40\n\
         vllm:num_requests_waiting{namespace=\"down\",pod=\"down-1\"} 40\n",
    );
    let mut prom = Prometheus::start(&exporter).await;
    prom.wait_for("sum(vllm:num_requests_waiting)", 80.0).await;
    let cluster = FakeCluster::default();
    cluster.apply(DEPLOYMENTS, deployment("down", 2));
    for i in 0..2 {
        cluster.apply("pods", pod("down", i, true, json!({})));
    }
    cluster.apply(
        GA,
        autoscaler(
            "down",
            &prom.url(),
            json!({"maxReplicas": 10, "metrics": [queue(10.0)],
                   "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}),
        ),
    );
    let mut scaler = scaler(&cluster);
    scaler.sync(at(0)).await;
    assert_eq!(replicas(&cluster, "down"), 6);

    // Load drops to nothing, and Prometheus goes away.
    prom.stop();
    let writes_before = cluster.writes().len();
    let r1 = scaler.sync(at(1)).await;
    assert_eq!(
        replicas(&cluster, "down"),
        6,
        "no scale-down without metrics"
    );
    let (s, reason, message) = condition(&cluster, "down", "ScalingActive");
    assert_eq!(
        (s.as_str(), reason.as_str()),
        ("False", "FailedGetPrometheusMetrics")
    );
    assert!(message.contains("unreachable"), "{message}");
    // The first failure backs the endpoint off: the second series (vLLM
    // running, for the scale-down order) is not sent to a dead server.
    assert_eq!(r1.queries, 1);
    // Within the backoff nothing is sent.
    let r2 = scaler.sync(at(1).after(Duration::from_secs(5))).await;
    assert_eq!(r2.queries, 0);
    assert!(
        !cluster.writes()[writes_before..]
            .iter()
            .any(|w| w.ends_with("/scale")),
        "{:?}",
        cluster.writes()
    );

    exporter.set_serving(
        "vllm:num_requests_waiting{namespace=\"down\",pod=\"down-0\"} 1\n\
         vllm:num_requests_waiting{namespace=\"down\",pod=\"down-1\"} 1\n",
    );
    prom.restart().await;
    prom.wait_for("sum(vllm:num_requests_waiting)", 2.0).await;
    // Still backing off (15 s after the first failure): no query yet.
    let r3 = scaler.sync(at(1).after(Duration::from_secs(10))).await;
    assert_eq!(r3.queries, 0);
    assert_eq!(replicas(&cluster, "down"), 6);
    // After the backoff: read again, condition back to True, and scale down.
    let r4 = scaler.sync(at(3)).await;
    assert!(r4.queries > 0);
    let (s, reason, _) = condition(&cluster, "down", "ScalingActive");
    assert_eq!((s.as_str(), reason.as_str()), ("True", "ValidMetricFound"));
    // 2 pods at 1 waiting each against 10: 1 replica.
    assert_eq!(replicas(&cluster, "down"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_in_a_condition_and_nothing_is_scaled() {
    let exporter = Exporter::start().await;
    exporter.set_serving("vllm:num_requests_waiting{namespace=\"b1\",pod=\"b1-0\"} 50\n");
    let prom = Prometheus::start(&exporter).await;
    prom.wait_for("sum(vllm:num_requests_waiting)", 50.0).await;
    let cluster = FakeCluster::default();
    for ns in ["b1", "b2", "b3", "b4", "b5"] {
        cluster.apply(DEPLOYMENTS, deployment(ns, 1));
        cluster.apply("pods", pod(ns, 0, true, json!({})));
    }
    // b1: a query Prometheus refuses.
    cluster.apply(
        GA,
        autoscaler(
            "b1",
            &prom.url(),
            json!({"maxReplicas": 5, "metrics": [{"type": "Query", "query": {"promql": "sum(rate(x[1m]) by", "value": 1}}]}),
        ),
    );
    // b2: a target kind without /scale.
    let mut b2 = autoscaler(
        "b2",
        &prom.url(),
        json!({"maxReplicas": 5, "metrics": [queue(1.0)]}),
    );
    b2["spec"]["scaleTargetRef"] = json!({"apiVersion": "v1", "kind": "ConfigMap", "name": "llm"});
    cluster.apply(GA, b2);
    // b3: a bearer token Secret that does not exist.
    let mut b3 = autoscaler(
        "b3",
        &prom.url(),
        json!({"maxReplicas": 5, "metrics": [queue(1.0)]}),
    );
    b3["spec"]["prometheus"]["bearerTokenSecret"] = json!({"name": "prom-token"});
    cluster.apply(GA, b3);
    // b4: a spec that got past an API server without the CEL rules.
    cluster.apply(
        GA,
        autoscaler(
            "b4",
            &prom.url(),
            json!({"minReplicas": 4, "maxReplicas": 2, "metrics": [queue(0.0)]}),
        ),
    );
    // b5: valid, but the API server refuses its /scale write (no RBAC).
    cluster.apply(
        GA,
        autoscaler(
            "b5",
            &prom.url(),
            json!({"maxReplicas": 5, "metrics": [queue(1.0)]}),
        ),
    );
    exporter.set_serving(
        "vllm:num_requests_waiting{namespace=\"b1\",pod=\"b1-0\"} 50\n\
         vllm:num_requests_waiting{namespace=\"b5\",pod=\"b5-0\"} 3\n",
    );
    prom.wait_for("sum(vllm:num_requests_waiting)", 53.0).await;
    cluster.set_scale_blocked(true);
    let mut scaler = scaler(&cluster);
    let report = scaler.sync(at(0)).await;
    assert_eq!(report.autoscalers, 5);
    for (ns, type_, reason, says) in [
        (
            "b1",
            "ScalingActive",
            "FailedGetPrometheusMetrics",
            "bad_data",
        ),
        (
            "b2",
            "AbleToScale",
            "FailedGetScale",
            "no /scale subresource",
        ),
        (
            "b3",
            "ScalingActive",
            "FailedGetBearerToken",
            "Secret b3/prom-token: not found",
        ),
        ("b4", "ScalingActive", "InvalidSpec", "spec.maxReplicas"),
        ("b5", "AbleToScale", "FailedUpdateScale", "Forbidden"),
    ] {
        let (s, r, m) = condition(&cluster, ns, type_);
        assert_eq!((s.as_str(), r.as_str()), ("False", reason), "{ns}: {m}");
        assert!(m.contains(says), "{ns}: {m}");
        assert_eq!(replicas(&cluster, ns), 1, "{ns}");
    }
    // The only /scale write tried is b5's, refused.
    let tried: Vec<String> = cluster
        .writes()
        .into_iter()
        .filter(|w| w.ends_with("/scale"))
        .collect();
    assert_eq!(
        tried,
        ["PATCH /apis/apps/v1/namespaces/b5/deployments/llm/scale"]
    );
    // Each problem was also reported as a Warning Event (b5: FailedRescale
    // and the condition's FailedUpdateScale).
    let mut warnings: Vec<String> = cluster
        .objects("events.k8s.io/events")
        .into_iter()
        .filter(|e| e["type"] == "Warning")
        .map(|e| e["reason"].as_str().unwrap().to_owned())
        .collect();
    warnings.sort();
    assert_eq!(
        warnings,
        [
            "FailedGetBearerToken",
            "FailedGetPrometheusMetrics",
            "FailedGetScale",
            "FailedRescale",
            "FailedUpdateScale",
            "InvalidSpec"
        ]
    );
    cluster.set_scale_blocked(false);
    // A second sync with nothing changed writes no status and no Event for
    // the four that cannot scale; b5 now scales (3 waiting against 1 → 3).
    let writes = cluster.writes().len();
    let again = scaler.sync(at(1)).await;
    assert_eq!(replicas(&cluster, "b5"), 3);
    let new: Vec<String> = cluster.writes()[writes..]
        .iter()
        .filter(|w| !w.contains("/namespaces/b5/"))
        .cloned()
        .collect();
    assert!(new.is_empty(), "{new:?}");
    assert_eq!(again.status_writes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_down_marks_the_cloud_pod_with_fewest_requests_in_flight() {
    let exporter = Exporter::start().await;
    // dc-0 idle in the data center; cloud pods 1 (busy) and 2 (nearly idle).
    exporter.set_serving(
        "vllm:num_requests_waiting{namespace=\"d\",pod=\"d-0\"} 0\n\
         vllm:num_requests_waiting{namespace=\"d\",pod=\"d-1\"} 1\n\
         vllm:num_requests_waiting{namespace=\"d\",pod=\"d-2\"} 0\n\
         vllm:num_requests_running{namespace=\"d\",pod=\"d-0\"} 0\n\
         vllm:num_requests_running{namespace=\"d\",pod=\"d-1\"} 12\n\
         vllm:num_requests_running{namespace=\"d\",pod=\"d-2\"} 2\n",
    );
    let prom = Prometheus::start(&exporter).await;
    prom.wait_for("sum(vllm:num_requests_running)", 14.0).await;
    let cluster = FakeCluster::default();
    cluster.apply(DEPLOYMENTS, deployment("d", 3));
    let cost = |c: i32| {
        json!({"controller.kubernetes.io/pod-deletion-cost": c.to_string(),
               "scheduling.spillway.io/deletion-cost": c.to_string()})
    };
    cluster.apply("pods", pod("d", 0, true, cost(200)));
    cluster.apply("pods", pod("d", 1, true, cost(100)));
    cluster.apply("pods", pod("d", 2, true, cost(100)));
    cluster.apply(
        GA,
        autoscaler(
            "d",
            &prom.url(),
            json!({"maxReplicas": 5, "metrics": [queue(10.0)],
                   "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0,
                       "policies": [{"type": "Pods", "value": 1, "periodSeconds": 15}]}}}),
        ),
    );
    let mut scaler = scaler(&cluster);
    scaler.sync(at(0)).await;
    assert_eq!(replicas(&cluster, "d"), 2);
    let pods = cluster.objects("pods");
    let ann = |name: &str| {
        pods.iter().find(|p| p["metadata"]["name"] == name).unwrap()["metadata"]["annotations"]
            .clone()
    };
    // The cloud pod with 2 in flight goes, not the data-center pod (idle
    // but in an earlier unit) nor the busy cloud pod; the policy
    // controller's record moves with the cost, so it keeps it.
    assert_eq!(ann("d-2")["scheduling.spillway.io/drain-first"], "true");
    assert_eq!(
        ann("d-2")["controller.kubernetes.io/pod-deletion-cost"],
        "50"
    );
    assert_eq!(ann("d-2")["scheduling.spillway.io/deletion-cost"], "50");
    assert!(ann("d-1")["scheduling.spillway.io/drain-first"].is_null());
    assert!(ann("d-0")["scheduling.spillway.io/drain-first"].is_null());
    // The marks went out before /scale was written.
    let writes = cluster.writes();
    let mark = writes
        .iter()
        .position(|w| w.ends_with("/pods/d-2"))
        .unwrap();
    let scale = writes.iter().position(|w| w.ends_with("/scale")).unwrap();
    assert!(mark < scale, "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spillway_serve_runs_the_scaler_once_its_caches_sync_and_exports_its_metrics() {
    let exporter = Exporter::start().await;
    exporter.set_serving(
        "vllm:num_requests_waiting{namespace=\"srv\",pod=\"srv-0\"} 30\n\
         vllm:num_requests_waiting{namespace=\"srv\",pod=\"srv-1\"} 30\n",
    );
    let prom = Prometheus::start(&exporter).await;
    prom.wait_for("sum(vllm:num_requests_waiting)", 60.0).await;
    let cluster = FakeCluster::default();
    cluster.apply(DEPLOYMENTS, deployment("srv", 2));
    for i in 0..2 {
        cluster.apply("pods", pod("srv", i, true, json!({})));
    }
    cluster.apply(
        GA,
        autoscaler(
            "srv",
            &prom.url(),
            json!({"maxReplicas": 10, "metrics": [queue(10.0)]}),
        ),
    );
    let running = spillway::serve::start(
        cluster.client(),
        &spillway::serve::Options {
            scaler: Some(spillway::serve::ScalerOptions {
                sync_period: Duration::from_millis(200),
                drain_aware: true,
            }),
            ..super::sync::options()
        },
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while replicas(&cluster, "srv") != 6 {
        assert!(
            std::time::Instant::now() < deadline,
            "the scaler in spillway serve never scaled: {}",
            status(&cluster, "srv")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = running.extender.metrics().render();
    assert!(
        metrics.contains("spillway_scaler_rescales_total{direction=\"up\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("spillway_scaler_syncs_total"), "{metrics}");
    running.stop().await;
}

/// A TTFT histogram whose requests all land in one bucket per phase, as a
/// counter the test keeps growing (`rate()` needs traffic).
fn spawn_ttft_traffic(
    exporter: &Exporter,
    bucket: std::sync::Arc<std::sync::atomic::AtomicUsize>,
) -> tokio::task::JoinHandle<()> {
    const LE: [&str; 5] = ["0.25", "0.5", "1", "2", "4"];
    let exporter = exporter.clone();
    tokio::spawn(async move {
        let mut counts = [0u64; 5];
        loop {
            let b = bucket.load(std::sync::atomic::Ordering::Relaxed);
            // Cumulative buckets: a request in bucket b counts in b and above.
            for c in &mut counts[b..] {
                *c += 5;
            }
            let mut page = String::from("# TYPE vllm:time_to_first_token_seconds histogram\n");
            for pod in ["lat-0", "lat-1"] {
                for (le, c) in LE.iter().zip(counts) {
                    let _ = writeln!(
                        page,
                        "vllm:time_to_first_token_seconds_bucket{{namespace=\"lat\",pod=\"{pod}\",le=\"{le}\"}} {c}"
                    );
                }
                let _ = writeln!(
                    page,
                    "vllm:time_to_first_token_seconds_bucket{{namespace=\"lat\",pod=\"{pod}\",le=\"+Inf\"}} {}",
                    counts[4]
                );
                let _ = writeln!(
                    page,
                    "vllm:time_to_first_token_seconds_count{{namespace=\"lat\",pod=\"{pod}\"}} {}",
                    counts[4]
                );
            }
            exporter.set_serving(&page);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latency_objective_read_from_prometheus_scales_up_holds_and_steps_down_no_further_than_its_memory()
 {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let exporter = Exporter::start().await;
    // Phase 1: every request takes 2–4 s against a 1 s objective.
    let bucket = std::sync::Arc::new(AtomicUsize::new(4));
    let traffic = spawn_ttft_traffic(&exporter, bucket.clone());
    let prom = Prometheus::start(&exporter).await;
    let p90 =
        "histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket[5s])))";
    prom.wait_for(&format!("{p90} > 3"), 3.8).await;
    let cluster = FakeCluster::default();
    cluster.apply(DEPLOYMENTS, deployment("lat", 2));
    for i in 0..2 {
        cluster.apply("pods", pod("lat", i, true, json!({})));
    }
    cluster.apply(
        GA,
        autoscaler(
            "lat",
            &prom.url(),
            json!({"maxReplicas": 10,
                   "metrics": [{"type": "Latency", "latency": {"objective": "1s", "window": "5s"}}],
                   "behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}),
        ),
    );
    let mut scaler = scaler(&cluster);
    // 3.8 s against 1 s: at most double per sync.
    scaler.sync(at(0)).await;
    assert_eq!(replicas(&cluster, "lat"), 4, "{}", status(&cluster, "lat"));
    let m = &status(&cluster, "lat")["currentMetrics"][0];
    assert_eq!(m["target"], "1s");
    assert!(m["current"].as_str().unwrap().starts_with("3.8"), "{m}");

    // Phase 2: 0.5–1 s, inside the band: hold.
    bucket.store(2, Ordering::Relaxed);
    prom.wait_for(&format!("{p90} < 1 > 0.5"), 0.95).await;
    scaler.sync(at(1)).await;
    assert_eq!(replicas(&cluster, "lat"), 4, "{}", status(&cluster, "lat"));

    // Phase 3: under 0.25 s, below half the objective. The band alone
    // would halve to 2, but the objective was missed at this very request
    // rate on 2 replicas (phase 1): the scaler stops where the load per
    // replica stays 10 % under the rate it was missed at — 3 at an exactly
    // steady rate, 4 if the rate Prometheus measured then was lower than now
    // (the exporter's ticks jitter).
    bucket.store(0, Ordering::Relaxed);
    prom.wait_for(&format!("{p90} < 0.25"), 0.225).await;
    scaler.sync(at(2)).await;
    let m = status(&cluster, "lat")["currentMetrics"][0].clone();
    let held = replicas(&cluster, "lat");
    assert!((3..=4).contains(&held), "{held}: {m}");
    assert!(
        m["reason"]
            .as_str()
            .unwrap()
            .contains(&format!("held at {held}")),
        "{m}"
    );
    traffic.abort();
}
