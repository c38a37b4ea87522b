//! Two `spillway serve` replicas on one Lease, against the stateful fake
//! API server, on paused time: only the leader answers; when it stops in
//! the middle of a burst the follower takes over, admits no pod past `max`
//! and every pod still binds.

use std::collections::BTreeSet;

use std::time::Duration;

use serde_json::{Value, json};
use spillway::extender::server::{RouterConfig, router};
use spillway::serve::leader::{LeaderOptions, Mode};
use spillway::serve::{Options, Running, start};
use tokio::time::Instant;

use super::apiserver::FakeCluster;
use super::sync::{BURST_NODES, Scheduler, burst_cluster, names, placement_counts, post};

const LEASES: &str = "coordination.k8s.io/leases";

fn options(identity: &str) -> Options {
    Options {
        instance: Some(identity.into()),
        leader: Some(LeaderOptions {
            mode: Mode::Acquire,
            namespace: "spillway-system".into(),
            name: "spillway".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }),
        ..super::sync::options()
    }
}

/// Waits (on paused time) until `f` holds, for at most `limit`.
async fn until(what: &str, limit: Duration, f: impl Fn() -> bool) {
    let deadline = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn holder(fake: &FakeCluster) -> Option<String> {
    fake.objects(LEASES)
        .first()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

fn gauge(running: &Running, name: &str) -> Option<String> {
    running
        .extender
        .metrics()
        .render()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

/// Runs the burst with `a` leading; at 30 bound pods `a` goes (gracefully
/// or by a crash). Returns the hand-over time: from `a`'s end until `b`
/// answers.
async fn burst_with_handover(crash: bool) -> Duration {
    let fake = burst_cluster();
    let a = start(fake.client(), &options("a"));
    until("a leads", Duration::from_secs(30), || a.extender.is_ready()).await;
    let b = start(fake.client(), &options("b"));
    // The follower lists everything (a warm index) but does not answer.
    until("b's caches fill", Duration::from_secs(30), || {
        b.extender.with_index(|ix| ix.snapshot.pod_count()) == 100
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!b.extender.is_ready(), "a follower reports ready");
    assert_eq!(holder(&fake).as_deref(), Some("a"));
    assert_eq!(gauge(&a, "spillway_leader").as_deref(), Some("1"));
    assert_eq!(gauge(&b, "spillway_leader").as_deref(), Some("0"));
    let pod = fake.objects("pods")[0].clone();
    let filter = serde_json::to_vec(&json!({"Pod": pod, "NodeNames": BURST_NODES})).unwrap();
    let (_, refused) = post(
        &router(b.extender.clone(), &RouterConfig::default()),
        "/scheduler/filter",
        filter,
    )
    .await;
    assert!(names(&refused).is_empty(), "{refused}");
    assert!(
        refused["Error"]
            .as_str()
            .is_some_and(|e| e.contains("follower")),
        "{refused}"
    );

    // The extender Service sends the scheduler to the ready replica.
    let mut sched = Scheduler::new(&a.extender);
    let mut a = Some(a);
    let mut handover = None;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let bound = fake.bindings().len();
        if bound == 100 {
            break;
        }
        assert!(Instant::now() < deadline, "only {bound} of 100 pods bound");
        if bound >= 30
            && let Some(leader) = a.take()
        {
            // SIGTERM: a is taken out of the Service, its requests in
            // flight finish, then it stops (releasing the lease) — or it
            // simply dies.
            leader.extender.drain();
            sched.settle().await;
            let gone = Instant::now();
            if crash {
                leader.kill().await;
            } else {
                leader.stop().await;
            }
            until("b takes over", Duration::from_secs(60), || {
                b.extender.is_ready()
            })
            .await;
            handover = Some(gone.elapsed());
            *sched.app.lock().unwrap() = router(b.extender.clone(), &RouterConfig::default());
            assert_eq!(holder(&fake).as_deref(), Some("b"));
        }
        sched.cycle(&fake, &BURST_NODES).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    sched.settle().await;
    assert_eq!(
        placement_counts(&fake),
        (20, 80),
        "max 20 holds across the hand-over"
    );
    let bound: BTreeSet<String> = fake.bindings().into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        (fake.bindings().len(), bound.len()),
        (100, 100),
        "every pod bound once"
    );
    assert_eq!(gauge(&b, "spillway_leader").as_deref(), Some("1"));
    let lease: &Value = &fake.objects(LEASES)[0];
    assert_eq!(lease["spec"]["leaseTransitions"], 1, "{lease}");
    b.stop().await;
    assert_eq!(holder(&fake), None, "a stopping leader releases the lease");
    handover.expect("the leader went mid-burst")
}

#[tokio::test(start_paused = true)]
async fn a_leader_stopping_mid_burst_hands_over_within_one_retry_period() {
    let took = burst_with_handover(false).await;
    eprintln!("hand-over after a graceful stop: {took:?} (paused time)");
    // The follower's next round finds the lease released.
    assert!(took <= Duration::from_secs(3), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_once_its_lease_lapses() {
    let took = burst_with_handover(true).await;
    eprintln!("hand-over after a crash: {took:?} (paused time)");
    // Honoured for the lease duration after b last saw it renewed, then
    // taken at b's next round: b saw the last renewal at most one retry period after it was made.
    assert!(took >= Duration::from_secs(13), "{took:?}");
    assert!(took <= Duration::from_secs(19), "{took:?}");
}

fn scheduler_lease(holder: &str) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "spillway-scheduler", "namespace": "spillway-system"},
           "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                    "renewTime": "2026-01-01T00:00:00.000000Z"}})
}

fn follower(pod: &str) -> Options {
    let mut o = options(pod);
    if let Some(l) = o.leader.as_mut() {
        l.mode = Mode::Follow;
        l.name = "spillway-scheduler".into();
    }
    o
}

#[tokio::test(start_paused = true)]
async fn as_a_sidecar_spillway_leads_where_its_scheduler_holds_the_lease_and_never_writes_it() {
    let fake = burst_cluster();
    fake.apply(LEASES, scheduler_lease("pod-a_0c9f"));
    let a = start(fake.client(), &follower("pod-a"));
    let b = start(fake.client(), &follower("pod-b"));
    until("pod-a's Spillway answers", Duration::from_secs(30), || {
        a.extender.is_ready()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!b.extender.is_ready(), "pod-b's scheduler is on standby");
    // pod-b's scheduler takes the lease (pod-a's stopped): within one retry
    // period pod-a's Spillway refuses and pod-b's answers.
    fake.apply(LEASES, scheduler_lease("pod-b_77aa"));
    until("pod-b's Spillway answers", Duration::from_secs(3), || {
        b.extender.is_ready() && !a.extender.is_ready()
    })
    .await;
    // A scheduler that stops renewing is followed no longer: 15 s after
    // the last change seen, nobody answers.
    tokio::time::sleep(Duration::from_secs(18)).await;
    assert!(!b.extender.is_ready(), "a lapsed lease still followed");
    assert!(
        fake.writes().iter().all(|w| !w.contains("/leases")),
        "a following Spillway wrote the lease: {:?}",
        fake.writes()
    );
    a.stop().await;
    b.stop().await;
}
