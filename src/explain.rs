//! `spillway explain`: where a pod would go under its ResourcePolicy, and why.
//!
//! ```text
//!  policy files ─┐                                       ┌─► text report (for a ticket)
//!  cluster files ┼─► index::convert ─► Snapshot ─► core ─┤
//!  pod ──────────┘                                       └─► JSON (for scripts)
//! ```
//!
//! The same core calls the extender makes: governing policy, unit usage,
//! Filter, scores. Without kube-scheduler in front, feasible nodes come from
//! the core's resource fit (cordons and requests) unless `--feasible` names them.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1 as k8s;
use serde::Serialize;

use crate::cli::{ExplainArgs, Format};
use crate::crd::{KIND, ResourcePolicyManifest};
use crate::decision::admission::{Admission, WaitCause};
use crate::decision::filter::{Decision, FilterRequest, filter};
use crate::decision::fit::feasible_nodes;
use crate::decision::ledger::Ledger;
use crate::decision::policy::Policy;
use crate::decision::score::scores;
use crate::decision::snapshot::{Pod, Snapshot};
use crate::decision::time::{Time, format_rfc3339, parse_rfc3339};
use crate::index::convert;

/// Everything `explain` found, serializable for `--output json`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// When the decision was evaluated (RFC 3339).
    pub evaluated_at: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The pod's effective requests.
    pub requests: String,
    /// Node the pod is bound to now, if any (explained as if rescheduled).
    pub currently_on: Option<String>,
    /// Governing policy, if any.
    pub policy: Option<String>,
    /// Other policies selecting the pod (a user error).
    pub conflicts: Vec<String>,
    /// One line summary of the decision.
    pub decision: String,
    /// Per-unit state, in policy order.
    pub units: Vec<UnitRow>,
    /// Nodes the pod may go to, best score first.
    pub eligible: Vec<NodeRow>,
    /// Every other node with its reason.
    pub rejected: Vec<NodeRow>,
    /// Caveats about what was modelled.
    pub notes: Vec<String>,
    /// Likely mistakes in the policies given, such as a unit no node of the
    /// snapshot belongs to.
    pub warnings: Vec<String>,
}

/// One unit in the report.
#[derive(Debug, Serialize)]
pub struct UnitRow {
    /// Unit name.
    pub name: String,
    /// Resource kind.
    pub resource: String,
    /// Nodes of the snapshot in the unit.
    pub nodes: usize,
    /// Counted pods for the pod's group.
    pub pods: u32,
    /// `max`, if set.
    pub max: Option<u32>,
    /// `chosen`, `waiting`, or why it was passed over, or `not reached`.
    pub state: String,
}

/// One node in the report.
#[derive(Debug, Serialize)]
pub struct NodeRow {
    /// Node name.
    pub node: String,
    /// Unit name, or `-` outside every unit.
    pub unit: String,
    /// Score 0–10 for eligible nodes.
    pub score: Option<u8>,
    /// `eligible`, `failed` (retry/preemption may help), `unresolvable`, or
    /// `not feasible` (kube-scheduler's own filters).
    pub verdict: String,
    /// Why, for rejected nodes; free resources for eligible ones.
    pub reason: String,
}

/// Reads every YAML/JSON document of a file as JSON values, flattening Lists.
pub(crate) fn documents(path: &Path) -> anyhow::Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<serde_json::Value> = if path.extension().is_some_and(|e| e == "json") {
        vec![serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?]
    } else {
        serde_saphyr::from_multiple(&text)
            .map_err(|e| anyhow::anyhow!("parsing {}: {e}", path.display()))?
    };
    let mut out = Vec::new();
    for doc in docs {
        if doc.is_null() {
            continue;
        }
        let is_list = doc
            .get("kind")
            .and_then(|k| k.as_str())
            .is_some_and(|k| k.ends_with("List"));
        match doc.get("items").and_then(|i| i.as_array()) {
            Some(items) if is_list => out.extend(items.iter().cloned()),
            _ => out.push(doc),
        }
    }
    Ok(out)
}

fn kind_of(doc: &serde_json::Value) -> &str {
    doc.get("kind").and_then(|k| k.as_str()).unwrap_or("")
}

fn load_policy(doc: serde_json::Value, origin: &str) -> anyhow::Result<Policy> {
    let m: ResourcePolicyManifest = serde_json::from_value(doc)
        .with_context(|| format!("{origin}: not a valid ResourcePolicy"))?;
    m.to_policy().with_context(|| origin.to_owned())
}

/// Builds the snapshot from the files and runs the decision.
///
/// # Errors
/// Unreadable files, invalid policies (each field named), an unknown pod.
pub fn run(args: &ExplainArgs) -> anyhow::Result<String> {
    let now = match &args.at {
        Some(at) => parse_rfc3339(at)?,
        None => Time::from_millis(
            i64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_millis(),
            )
            .unwrap_or(0),
        ),
    };
    let mut snapshot = Snapshot::new();
    let mut notes = Vec::new();
    for path in &args.policies {
        let docs = documents(path)?;
        if !docs.iter().any(|d| kind_of(d) == KIND) {
            bail!("no {KIND} in {}", path.display());
        }
        for (i, doc) in docs.into_iter().enumerate() {
            let origin = format!("{} document {}", path.display(), i + 1);
            snapshot.upsert_policy(load_policy(doc, &origin)?);
        }
    }
    for path in &args.cluster {
        for doc in documents(path)? {
            match kind_of(&doc) {
                "Node" => match serde_json::from_value::<k8s::Node>(doc)
                    .map_err(|e| e.to_string())
                    .and_then(|n| convert::node(&n).map_err(|e| e.to_string()))
                {
                    Ok(n) => snapshot.upsert_node(n),
                    Err(e) => notes.push(format!(
                        "skipped a malformed Node in {}: {e}",
                        path.display()
                    )),
                },
                "Pod" => match serde_json::from_value::<k8s::Pod>(doc)
                    .map_err(|e| e.to_string())
                    .and_then(|p| convert::pod(&p, None, now).map_err(|e| e.to_string()))
                {
                    Ok(p) => snapshot.upsert_pod(p),
                    Err(e) => notes.push(format!(
                        "skipped a malformed Pod in {}: {e}",
                        path.display()
                    )),
                },
                KIND => {
                    let origin = format!("{} (ResourcePolicy)", path.display());
                    snapshot.upsert_policy(load_policy(doc, &origin)?);
                }
                _ => {}
            }
        }
    }
    if snapshot.node_count() == 0 {
        bail!("the cluster files hold no Node objects");
    }
    let pod = find_pod(&snapshot, &args.pod, now)?;
    let warnings = unit_warnings(&snapshot);
    let mut report = decide(&mut snapshot, &pod, args.feasible.clone(), now, notes);
    report.warnings = warnings;
    Ok(match args.output {
        Format::Json => serde_json::to_string_pretty(&report)? + "\n",
        Format::Text => render(&report),
    })
}

/// One warning per unit of a loaded policy that no snapshot node belongs to
/// (the core's [`Policy::units_without_nodes`]).
fn unit_warnings(snapshot: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for p in snapshot.policies() {
        for u in p.units_without_nodes(snapshot.nodes()) {
            out.push(format!(
                "{KIND} {} unit {:?} (#{u}) selects no node of the cluster snapshot",
                p.key, p.units[u].name
            ));
        }
    }
    out
}

fn find_pod(snapshot: &Snapshot, pod: &str, now: Time) -> anyhow::Result<Pod> {
    let path = Path::new(pod);
    if path.exists() {
        let docs = documents(path)?;
        let doc = docs
            .into_iter()
            .find(|d| kind_of(d) == "Pod")
            .with_context(|| format!("{} holds no Pod", path.display()))?;
        let p: k8s::Pod = serde_json::from_value(doc)
            .with_context(|| format!("{}: not a valid Pod", path.display()))?;
        let fallback = format!("explain-{}", p.metadata.name.clone().unwrap_or_default());
        return Ok(convert::pod(&p, Some(&fallback), now)?);
    }
    let Some((ns, name)) = pod.split_once('/') else {
        bail!("--pod {pod:?} is neither a file nor NAMESPACE/NAME");
    };
    snapshot
        .pod_by_name(ns, name)
        .cloned()
        .with_context(|| format!("pod {ns}/{name} is not in the cluster files"))
}

fn decide(
    snapshot: &mut Snapshot,
    pod: &Pod,
    feasible: Option<Vec<String>>,
    now: Time,
    mut notes: Vec<String>,
) -> Report {
    // Explain as if (re)scheduling: the pod's own current placement must not
    // count against it.
    let currently_on = snapshot.remove_pod(&pod.uid).and_then(|p| p.node);
    let mut unfit = BTreeMap::new();
    let feasible = if let Some(list) = feasible {
        notes.push("feasible nodes as given by --feasible".into());
        list
    } else {
        let (ok, no) = feasible_nodes(snapshot, pod);
        unfit = no;
        notes.push(
            "feasibility modelled from cordons and free resources only; taints, affinity and node selectors are \
             kube-scheduler's (pass --feasible to give its list)"
                .into(),
        );
        ok
    };
    let wait_since = convert::wait_since(pod);
    let names: Vec<&str> = feasible.iter().map(String::as_str).collect();
    let out = filter(
        snapshot,
        &Ledger::new(),
        FilterRequest {
            pod,
            nodes: &names,
            wait_since,
            now,
        },
    );
    let policy = out
        .policy
        .as_ref()
        .and_then(|k| snapshot.policy(k))
        .cloned();
    let unit_name = |node: &str| -> String {
        match (&policy, snapshot.node(node)) {
            (Some(p), Some(n)) => p
                .unit_of_node(n)
                .map_or("-".into(), |u| p.units[u].name.clone()),
            _ => "-".into(),
        }
    };
    let mut eligible: Vec<NodeRow> = scores(snapshot, pod, &out.eligible)
        .into_iter()
        .map(|s| NodeRow {
            unit: unit_name(s.node),
            reason: snapshot
                .free(s.node)
                .unwrap_or_default()
                .only(&pod.requests)
                .to_string(),
            score: Some(s.score),
            node: s.node.to_owned(),
            verdict: "eligible".into(),
        })
        .collect();
    eligible.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.node.cmp(&b.node)));
    let mut rejected = Vec::new();
    for (verdict, map) in [("unresolvable", &out.unresolvable), ("failed", &out.failed)] {
        for (node, reason) in map {
            rejected.push(NodeRow {
                node: node.to_owned(),
                unit: unit_name(node),
                score: None,
                verdict: verdict.into(),
                reason: reason.clone(),
            });
        }
    }
    for (node, why) in unfit {
        rejected.push(NodeRow {
            unit: unit_name(&node),
            node,
            score: None,
            verdict: "not feasible".into(),
            reason: why.to_string(),
        });
    }
    rejected.sort_by(|a, b| a.node.cmp(&b.node));

    let (decision, units) = match (&out.decision, &policy) {
        (Decision::Ungoverned, _) | (_, None) => (
            "no ResourcePolicy selects this pod: every feasible node is eligible".into(),
            Vec::new(),
        ),
        (Decision::Rejected { reason }, Some(_)) => (format!("rejected: {reason}"), Vec::new()),
        (Decision::Admitted(a), Some(p)) => (summary(p, a), unit_rows(snapshot, p, a, &out.usage)),
    };
    Report {
        evaluated_at: format_rfc3339(now),
        pod: format!("{}/{}", pod.namespace, pod.name),
        requests: pod.requests.to_string(),
        currently_on,
        policy: out.policy.as_ref().map(ToString::to_string),
        conflicts: out.conflicts.iter().map(ToString::to_string).collect(),
        decision,
        units,
        eligible,
        rejected,
        notes,
        warnings: Vec::new(),
    }
}

fn summary(p: &Policy, a: &Admission) -> String {
    match a {
        Admission::Unit { unit, .. } => format!("unit {:?} (#{unit}) takes the pod", p.units[*unit].name),
        Admission::Wait { unit, cause, since, .. } => {
            let why = match cause {
                WaitCause::BelowCap => "ExceedMax: the unit has room under its cap but no feasible node".to_owned(),
                WaitCause::Timeout { deadline } => {
                    format!("TimeoutOrExceedMax: waits for room until {}", format_rfc3339(*deadline))
                }
                WaitCause::Terminating { count } => {
                    format!("LackResourceAndNoTerminating: {count} pod(s) of the unit are terminating")
                }
                WaitCause::Preemption { deadline } => format!(
                    "BeforeNextUnit: preemption may make room; gives up at {}",
                    format_rfc3339(*deadline)
                ),
            };
            format!(
                "pod stays pending for unit {:?} (waiting since {}; {why})",
                p.units[*unit].name,
                format_rfc3339(*since)
            )
        }
        Admission::OutsideUnits { .. } => "every unit is full or has no room: nodes outside every unit are eligible (strategy: prefer)".into(),
        Admission::Exhausted { .. } => "every unit is full or has no room and strategy is required: the pod stays pending".into(),
    }
}

fn unit_rows(
    snapshot: &Snapshot,
    p: &Policy,
    a: &Admission,
    usage: &[crate::decision::usage::UnitUsage],
) -> Vec<UnitRow> {
    let m_usage = |i: usize| usage.get(i).cloned().unwrap_or_default();
    p.units
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let state = match (a, a.skip_of(i)) {
                (_, Some(skip)) => match skip {
                    crate::decision::admission::Skip::Full { count, max } => {
                        format!("full ({count}/{max})")
                    }
                    crate::decision::admission::Skip::ResourceCap { resource, .. } => {
                        format!("at maxResources {resource}")
                    }
                    crate::decision::admission::Skip::NoRoom => "no feasible node".into(),
                    crate::decision::admission::Skip::WaitExpired { .. } => "wait timed out".into(),
                },
                (Admission::Unit { unit, .. }, None) if *unit == i => "chosen".into(),
                (Admission::Wait { unit, .. }, None) if *unit == i => "pod waits here".into(),
                _ => "not reached".into(),
            };
            UnitRow {
                name: u.name.clone(),
                resource: u.resource.as_str().into(),
                nodes: snapshot
                    .nodes()
                    .filter(|n| p.unit_of_node(n) == Some(i))
                    .count(),
                pods: m_usage(i).pods,
                max: u.max,
                state,
            }
        })
        .collect()
}

/// Left-aligned columns separated by two spaces.
fn table(out: &mut String, header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            widths[i] = widths[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::from("  ");
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                let _ = write!(s, "{c:<w$}  ", w = widths[i]);
            }
        }
        s.trim_end().to_owned()
    };
    let _ = writeln!(out, "{}", line(header.to_vec()));
    for r in rows {
        let _ = writeln!(out, "{}", line(r.iter().map(String::as_str).collect()));
    }
}

fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "Pod:       {} (requests {})", r.pod, r.requests);
    if let Some(n) = &r.currently_on {
        let _ = writeln!(
            s,
            "           currently on {n}; explained as if it were scheduled again"
        );
    }
    let _ = writeln!(s, "Policy:    {}", r.policy.as_deref().unwrap_or("none"));
    if !r.conflicts.is_empty() {
        let _ = writeln!(
            s,
            "Conflicts: {} also select this pod; the oldest policy governs (fix the selectors)",
            r.conflicts.join(", ")
        );
    }
    let _ = writeln!(s, "Decision:  {}", r.decision);
    if !r.warnings.is_empty() {
        let _ = writeln!(s, "\nWarnings:");
        for w in &r.warnings {
            let _ = writeln!(s, "  {w}");
        }
    }
    if !r.units.is_empty() {
        let _ = writeln!(s, "\nUnits, in order:");
        let rows: Vec<Vec<String>> = r
            .units
            .iter()
            .enumerate()
            .map(|(i, u)| {
                vec![
                    i.to_string(),
                    u.name.clone(),
                    u.resource.clone(),
                    u.nodes.to_string(),
                    u.pods.to_string(),
                    u.max.map_or("-".into(), |m| m.to_string()),
                    u.state.clone(),
                ]
            })
            .collect();
        table(
            &mut s,
            &["#", "UNIT", "RESOURCE", "NODES", "PODS", "MAX", "STATE"],
            &rows,
        );
    }
    let _ = writeln!(s, "\nEligible nodes ({}), best first:", r.eligible.len());
    if r.eligible.is_empty() {
        let _ = writeln!(s, "  none: the pod stays pending");
    } else {
        let rows: Vec<Vec<String>> = r
            .eligible
            .iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.unit.clone(),
                    n.score.map_or("-".into(), |x| x.to_string()),
                    n.reason.clone(),
                ]
            })
            .collect();
        table(&mut s, &["NODE", "UNIT", "SCORE", "FREE"], &rows);
    }
    if !r.rejected.is_empty() {
        let _ = writeln!(s, "\nRejected nodes ({}):", r.rejected.len());
        let rows: Vec<Vec<String>> = r
            .rejected
            .iter()
            .map(|n| {
                vec![
                    n.node.clone(),
                    n.unit.clone(),
                    n.verdict.clone(),
                    n.reason.clone(),
                ]
            })
            .collect();
        table(&mut s, &["NODE", "UNIT", "VERDICT", "REASON"], &rows);
    }
    let _ = writeln!(s, "\nEvaluated at {}.", r.evaluated_at);
    for n in &r.notes {
        let _ = writeln!(s, "Note: {n}.");
    }
    s
}
