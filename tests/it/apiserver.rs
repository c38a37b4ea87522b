//! A stateful in-process stand-in for the API server calls `spillway serve`
//! makes, so the real watches, binder and writers run against it: list and
//! watch of any collection (Nodes, Pods, ResourcePolicies of both groups),
//! JSON merge patches of objects and their `status`, `pods/binding` (which
//! checks the UID, sets `spec.nodeName`, merges the Binding's annotations
//! and sends the watch event, as the API server does),
//! creation of Events, discovery and `/scale` of Deployments and
//! StatefulSets, label-selected lists and collection deletes, namespace
//! deletion with the namespace's objects, and get, create (409 when it exists) and
//! resourceVersion-checked replace (409 on a stale version) of any object,
//! which is all a Lease election needs.
//!
//! Watches replay every change after the `resourceVersion` they start from,
//! so nothing between a list and its watch is lost. A list can be delayed
//! ([`FakeCluster::set_list_delay`]) to hold a new instance unsynced.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body as AxumBody, Bytes};
use axum::http::{Request, Response};
use http_body_util::BodyExt;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

/// One change, as a watch delivers it.
struct Change {
    rv: u64,
    collection: String,
    namespace: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// collection → (namespace, name) → object.
    objects: BTreeMap<String, BTreeMap<(String, String), Value>>,
    log: Vec<Change>,
    watchers: Vec<(String, Option<String>, UnboundedSender<Bytes>)>,
    /// Bindings created, by pod name (a second one is a conflict).
    bindings: Vec<(String, String)>,
}

/// The fake cluster; clones share it.
#[derive(Clone, Default)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
    list_delay: Arc<Mutex<Duration>>,
    /// Evictions answered 429, as when a PodDisruptionBudget allows none.
    evictions_blocked: Arc<Mutex<bool>>,
    /// `/scale` patches answered 403, as without RBAC for them.
    scale_blocked: Arc<Mutex<bool>>,
    /// Every request but lists and watches: `METHOD path`, in order.
    writes: Arc<Mutex<Vec<String>>>,
}

/// Where a request goes: the collection (`pods`, `nodes`, or
/// `GROUP/PLURAL`), the namespace, the object's name and the subresource.
#[derive(Debug)]
struct Target {
    collection: String,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

fn target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => (None, rest),
        ["apis", group, _version, rest @ ..] => (Some(*group), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        _ => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some((*name).to_owned()), None),
        [plural, name, sub] => (*plural, Some((*name).to_owned()), Some((*sub).to_owned())),
        _ => return None,
    };
    let collection = match group {
        None => plural.to_owned(),
        Some(g) => format!("{g}/{plural}"),
    };
    Some(Target {
        collection,
        namespace,
        name,
        sub,
    })
}

/// The `autoscaling/v1` Scale of a Deployment-shaped object: replicas and
/// its `spec.selector.matchLabels` as a selector string.
fn scale_of(obj: &Value) -> Value {
    let selector: Vec<String> = obj["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
           "metadata": {"name": obj["metadata"]["name"], "namespace": obj["metadata"]["namespace"]},
           "spec": {"replicas": obj["spec"]["replicas"]},
           "status": {"replicas": obj["spec"]["replicas"], "selector": selector.join(",")}})
}

/// API discovery (`/api/v1`, `/apis/GROUP/VERSION`) for the kinds the
/// tests use: Deployments and StatefulSets have `/scale`, Pods and
/// ConfigMaps do not.
fn discovery(path: &str) -> Option<Value> {
    let res = |name: &str, kind: &str| json!({"name": name, "singularName": "", "namespaced": true, "kind": kind, "verbs": ["get", "list", "watch", "patch"]});
    let (gv, resources) = match path.trim_end_matches('/') {
        "/api/v1" => (
            "v1",
            vec![
                res("pods", "Pod"),
                res("pods/status", "Pod"),
                res("configmaps", "ConfigMap"),
                res("secrets", "Secret"),
            ],
        ),
        "/apis/apps/v1" => (
            "apps/v1",
            vec![
                res("deployments", "Deployment"),
                res("deployments/scale", "Scale"),
                res("deployments/status", "Deployment"),
                res("statefulsets", "StatefulSet"),
                res("statefulsets/scale", "Scale"),
            ],
        ),
        _ => return None,
    };
    Some(
        json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
           "status": if code < 300 { "Success" } else { "Failure" },
           "message": message, "reason": reason, "code": code})
}

/// RFC 7386 JSON merge patch.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn namespace_of(obj: &Value) -> String {
    obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn name_of(obj: &Value) -> String {
    obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn list_kind(collection: &str) -> String {
    let plural = collection.rsplit('/').next().unwrap_or(collection);
    match plural {
        "pods" => "PodList".to_owned(),
        "nodes" => "NodeList".to_owned(),
        "resourcepolicies" => "ResourcePolicyList".to_owned(),
        other => format!("{other}List"),
    }
}

impl State {
    /// Stores `obj` (new or changed) and tells the watches.
    fn put(&mut self, collection: &str, mut obj: Value, kind: &'static str) -> Value {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        if obj["metadata"]["uid"].is_null() {
            obj["metadata"]["uid"] = json!(format!("uid-{}-{rv}", name_of(&obj)));
        }
        if obj["metadata"]["creationTimestamp"].is_null() {
            obj["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        }
        let (ns, name) = (namespace_of(&obj), name_of(&obj));
        self.objects
            .entry(collection.to_owned())
            .or_default()
            .insert((ns.clone(), name), obj.clone());
        self.record(collection, ns, kind, obj.clone());
        obj
    }

    fn delete(&mut self, collection: &str, namespace: &str, name: &str) -> Option<Value> {
        let obj = self
            .objects
            .get_mut(collection)?
            .remove(&(namespace.to_owned(), name.to_owned()))?;
        self.rv += 1;
        self.record(collection, namespace.to_owned(), "DELETED", obj.clone());
        Some(obj)
    }

    fn record(&mut self, collection: &str, namespace: String, kind: &'static str, object: Value) {
        let line = watch_line(kind, &object);
        self.watchers.retain(|(c, ns, tx)| {
            if c != collection || ns.as_ref().is_some_and(|n| *n != namespace) {
                return true;
            }
            tx.send(line.clone()).is_ok()
        });
        self.log.push(Change {
            rv: self.rv,
            collection: collection.to_owned(),
            namespace,
            kind,
            object,
        });
    }

    fn get(&self, collection: &str, namespace: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(collection)?
            .get(&(namespace.to_owned(), name.to_owned()))
    }
}

fn watch_line(kind: &'static str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": kind, "object": object})).unwrap();
    line.push(b'\n');
    Bytes::from(line)
}

fn json_response(code: u16, body: &Value) -> Response<AxumBody> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(AxumBody::from(serde_json::to_vec(body).unwrap()))
        .unwrap()
}

impl FakeCluster {
    /// A client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let fake = self.clone();
        let svc = tower::service_fn(move |req: Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, Infallible>(fake.handle(req).await) }
        });
        kube::Client::new(svc, "default")
    }

    /// Answers evictions with 429 (`true`), as when a PodDisruptionBudget
    /// allows no disruption, or carries them out (`false`).
    pub fn set_scale_blocked(&self, blocked: bool) {
        *self.scale_blocked.lock().unwrap() = blocked;
    }

    /// Evictions answered 429 while `blocked`.
    pub fn set_evictions_blocked(&self, blocked: bool) {
        *self.evictions_blocked.lock().unwrap() = blocked;
    }

    /// Delays every list by `d` from now on.
    pub fn set_list_delay(&self, d: Duration) {
        *self.list_delay.lock().unwrap() = d;
    }

    /// Adds or replaces an object of `collection` (`nodes`, `pods`,
    /// `scheduling.spillway.io/resourcepolicies`, ...).
    pub fn apply(&self, collection: &str, obj: Value) {
        let mut st = self.state.lock().unwrap();
        let exists = st
            .get(collection, &namespace_of(&obj), &name_of(&obj))
            .is_some();
        st.put(collection, obj, if exists { "MODIFIED" } else { "ADDED" });
    }

    /// Ends every open watch with `410 Gone`, as an API server does when a
    /// watch's resourceVersion is compacted away: the watcher lists again.
    pub fn expire_watches(&self) {
        let gone = watch_line("ERROR", &status(410, "Expired", "too old resource version"));
        for (_, _, tx) in self.state.lock().unwrap().watchers.drain(..) {
            let _ = tx.send(gone.clone());
        }
    }

    /// Every object of `collection`.
    pub fn objects(&self, collection: &str) -> Vec<Value> {
        let st = self.state.lock().unwrap();
        st.objects
            .get(collection)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every request that was not a list or a watch (`METHOD path`), in
    /// order.
    pub fn writes(&self) -> Vec<String> {
        self.writes.lock().unwrap().clone()
    }

    /// Deletes an object as its owner's controller would (the watches see
    /// `DELETED`).
    pub fn remove(&self, collection: &str, namespace: &str, name: &str) {
        self.state
            .lock()
            .unwrap()
            .delete(collection, namespace, name);
    }

    /// Bindings created: (pod name, node), in order.
    pub fn bindings(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().bindings.clone()
    }

    async fn handle(&self, req: Request<Body>) -> Response<AxumBody> {
        let (parts, body) = req.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        let method = parts.method.to_string();
        let path = parts.uri.path().to_owned();
        let query = parts.uri.query().unwrap_or_default().to_owned();
        if let Some(list) = discovery(&path) {
            return json_response(200, &list);
        }
        let Some(t) = target(&path) else {
            return json_response(404, &status(404, "NotFound", "no such path"));
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if method != "GET" {
            self.writes.lock().unwrap().push(format!("{method} {path}"));
        }
        match (method.as_str(), &t.name, t.sub.as_deref()) {
            ("GET", None, None) => {
                if matches!(query_param(&query, "watch"), Some("true" | "1")) {
                    self.watch(&t, &query)
                } else {
                    let delay = *self.list_delay.lock().unwrap();
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    self.list(&t, &query)
                }
            }
            ("GET" | "PATCH", Some(name), Some("scale")) => {
                let mut st = self.state.lock().unwrap();
                let ns = t.namespace.clone().unwrap_or_default();
                let Some(mut obj) = st.get(&t.collection, &ns, name).cloned() else {
                    return json_response(
                        404,
                        &status(404, "NotFound", &format!("{name} not found")),
                    );
                };
                if method == "PATCH" {
                    if *self.scale_blocked.lock().unwrap() {
                        return json_response(
                            403,
                            &status(
                                403,
                                "Forbidden",
                                "cannot patch resource \"deployments/scale\"",
                            ),
                        );
                    }
                    obj["spec"]["replicas"] = body["spec"]["replicas"].clone();
                    obj = st.put(&t.collection, obj, "MODIFIED");
                }
                json_response(200, &scale_of(&obj))
            }
            ("PATCH", Some(name), sub @ (None | Some("status"))) => {
                let mut st = self.state.lock().unwrap();
                let ns = t.namespace.clone().unwrap_or_default();
                let Some(mut obj) = st.get(&t.collection, &ns, name).cloned() else {
                    return json_response(
                        404,
                        &status(404, "NotFound", &format!("{name} not found")),
                    );
                };
                if sub == Some("status") {
                    merge(&mut obj["status"], &body["status"]);
                } else {
                    let mut changes = body;
                    if let Some(m) = changes.as_object_mut() {
                        m.remove("status");
                    }
                    merge(&mut obj, &changes);
                }
                let obj = st.put(&t.collection, obj, "MODIFIED");
                json_response(200, &obj)
            }
            ("POST", Some(name), Some("binding")) if t.collection == "pods" => {
                let mut st = self.state.lock().unwrap();
                let ns = t.namespace.clone().unwrap_or_default();
                let node = body["target"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                let Some(mut pod) = st.get("pods", &ns, name).cloned() else {
                    return json_response(
                        404,
                        &status(404, "NotFound", &format!("pods {name:?} not found")),
                    );
                };
                if pod["spec"]["nodeName"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty())
                {
                    return json_response(
                        409,
                        &status(
                            409,
                            "Conflict",
                            &format!("pod {name} is already assigned to a node"),
                        ),
                    );
                }
                if let Some(uid) = body["metadata"]["uid"].as_str()
                    && pod["metadata"]["uid"].as_str() != Some(uid)
                {
                    return json_response(
                        409,
                        &status(409, "Conflict", "Precondition failed: UID in precondition"),
                    );
                }
                pod["spec"]["nodeName"] = json!(node);
                // The Binding's annotations are merged onto the pod in the
                // same update (what the API server's BindingREST does).
                if let Some(annotations) = body["metadata"]["annotations"].as_object() {
                    for (k, v) in annotations {
                        pod["metadata"]["annotations"][k] = v.clone();
                    }
                }
                pod["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True"}]);
                st.bindings.push((name.clone(), node));
                st.put("pods", pod, "MODIFIED");
                json_response(201, &status(201, "", ""))
            }
            ("GET", Some(name), None) => {
                let st = self.state.lock().unwrap();
                let ns = t.namespace.clone().unwrap_or_default();
                match st.get(&t.collection, &ns, name) {
                    Some(obj) => json_response(200, obj),
                    None => {
                        json_response(404, &status(404, "NotFound", &format!("{name} not found")))
                    }
                }
            }
            ("PUT", Some(name), None) => {
                // Replace: the resourceVersion sent must be the stored one.
                let mut st = self.state.lock().unwrap();
                let ns = t.namespace.clone().unwrap_or_default();
                let Some(current) = st.get(&t.collection, &ns, name) else {
                    return json_response(
                        404,
                        &status(404, "NotFound", &format!("{name} not found")),
                    );
                };
                if body["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
                    return json_response(
                        409,
                        &status(
                            409,
                            "Conflict",
                            "the object has been modified; please apply your changes to the latest version and try again",
                        ),
                    );
                }
                let mut obj = body;
                obj["metadata"]["uid"] = current["metadata"]["uid"].clone();
                obj["metadata"]["namespace"] = json!(ns);
                let obj = st.put(&t.collection, obj, "MODIFIED");
                json_response(200, &obj)
            }
            ("POST", Some(name), Some("eviction")) if t.collection == "pods" => {
                if *self.evictions_blocked.lock().unwrap() {
                    return json_response(
                        429,
                        &status(
                            429,
                            "TooManyRequests",
                            "Cannot evict pod as it would violate the pod's disruption budget.",
                        ),
                    );
                }
                let mut st = self.state.lock().unwrap();
                let ns = t.namespace.clone().unwrap_or_default();
                let Some(pod) = st.get("pods", &ns, name) else {
                    return json_response(
                        404,
                        &status(404, "NotFound", &format!("pods {name:?} not found")),
                    );
                };
                let want = &body["deleteOptions"]["preconditions"]["uid"];
                if !want.is_null() && *want != pod["metadata"]["uid"] {
                    return json_response(
                        409,
                        &status(409, "Conflict", "Precondition failed: UID in precondition"),
                    );
                }
                st.delete("pods", &ns, name);
                json_response(201, &status(201, "", ""))
            }
            ("POST", None, None) => {
                let mut st = self.state.lock().unwrap();
                let mut obj = body;
                if let Some(ns) = &t.namespace {
                    obj["metadata"]["namespace"] = json!(ns);
                }
                if obj["metadata"]["name"]
                    .as_str()
                    .is_some_and(|name| st.get(&t.collection, &namespace_of(&obj), name).is_some())
                {
                    return json_response(
                        409,
                        &status(409, "AlreadyExists", "the object already exists"),
                    );
                }
                if obj["metadata"]["name"].is_null() {
                    let n = st.rv;
                    let prefix = obj["metadata"]["generateName"]
                        .as_str()
                        .unwrap_or("obj-")
                        .to_owned();
                    obj["metadata"]["name"] = json!(format!("{prefix}{n}"));
                }
                let obj = st.put(&t.collection, obj, "ADDED");
                json_response(201, &obj)
            }
            ("DELETE", Some(name), None) => {
                let mut st = self.state.lock().unwrap();
                let ns = t.namespace.clone().unwrap_or_default();
                match st.delete(&t.collection, &ns, name) {
                    Some(obj) => {
                        // A namespace takes its objects with it.
                        if t.collection == "namespaces" {
                            let inside: Vec<(String, String)> = st
                                .objects
                                .iter()
                                .flat_map(|(c, m)| {
                                    m.keys()
                                        .filter(|(n, _)| n == name)
                                        .map(move |(_, o)| (c.clone(), o.clone()))
                                })
                                .collect();
                            for (c, o) in inside {
                                st.delete(&c, name, &o);
                            }
                        }
                        json_response(200, &obj)
                    }
                    None => {
                        json_response(404, &status(404, "NotFound", &format!("{name} not found")))
                    }
                }
            }
            ("DELETE", None, None) => {
                // deletecollection: every selected object, at once.
                let mut st = self.state.lock().unwrap();
                for ((ns, name), _) in selected(&st, &t, &query) {
                    st.delete(&t.collection, &ns, &name);
                }
                json_response(200, &status(200, "", ""))
            }
            _ => json_response(404, &status(404, "NotFound", "not served by the fake")),
        }
    }

    fn list(&self, t: &Target, query: &str) -> Response<AxumBody> {
        let st = self.state.lock().unwrap();
        let items: Vec<Value> = selected(&st, t, query)
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        let api_version = match t.collection.split_once('/') {
            Some((group, _)) => format!("{group}/v1alpha1"),
            None => "v1".to_owned(),
        };
        json_response(
            200,
            &json!({"apiVersion": api_version, "kind": list_kind(&t.collection),
                    "metadata": {"resourceVersion": st.rv.to_string()}, "items": items}),
        )
    }

    fn watch(&self, t: &Target, query: &str) -> Response<AxumBody> {
        let from: u64 = query_param(query, "resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let (tx, rx) = unbounded_channel::<Bytes>();
        let mut st = self.state.lock().unwrap();
        for c in st.log.iter().filter(|c| {
            c.rv > from
                && c.collection == t.collection
                && t.namespace.as_ref().is_none_or(|n| *n == c.namespace)
        }) {
            let _ = tx.send(watch_line(c.kind, &c.object));
        }
        st.watchers
            .push((t.collection.clone(), t.namespace.clone(), tx));
        drop(st);
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
        });
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(AxumBody::from_stream(stream))
            .unwrap()
    }
}

/// The objects of `t`'s collection in `t`'s namespace (all namespaces
/// without one) that the query's `labelSelector` selects: `key=value` and
/// `key` (the label exists) terms, all of which must hold. Keyed by
/// (namespace, name).
fn selected(st: &State, t: &Target, query: &str) -> Vec<((String, String), Value)> {
    let selector: Vec<(String, Option<String>)> = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "labelSelector")
        .map(|(_, v)| {
            v.split(',')
                .filter(|term| !term.is_empty())
                .map(|term| match term.split_once('=') {
                    Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
                    None => (term.to_owned(), None),
                })
                .collect()
        })
        .unwrap_or_default();
    st.objects
        .get(&t.collection)
        .map(|m| {
            m.iter()
                .filter(|((ns, _), _)| t.namespace.as_ref().is_none_or(|n| n == ns))
                .filter(|(_, v)| {
                    selector.iter().all(|(k, want)| {
                        let label = &v["metadata"]["labels"][k];
                        match want {
                            Some(want) => label.as_str() == Some(want),
                            None => !label.is_null(),
                        }
                    })
                })
                .map(|(key, v)| (key.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default()
}

/// A node of pool `pool` (label `pool`) with `gpus` GPUs.
pub fn node(name: &str, pool: &str, gpus: u32) -> Value {
    json!({"apiVersion": "v1", "kind": "Node",
           "metadata": {"name": name, "labels": {"pool": pool}},
           "status": {"allocatable": {"cpu": "64", "memory": "512Gi", "nvidia.com/gpu": gpus.to_string(), "pods": "110"},
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// A pending one-GPU pod `name` in namespace `ns` with label `app: llm`.
pub fn pending_pod(ns: &str, name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "uid": format!("uid-{name}"),
                        "labels": {"app": "llm"}},
           "spec": {"schedulerName": "spillway-scheduler",
                    "containers": [{"name": "c", "image": "vllm",
                                    "resources": {"limits": {"nvidia.com/gpu": "1"},
                                                  "requests": {"cpu": "1", "nvidia.com/gpu": "1"}}}]},
           "status": {"phase": "Pending"}})
}
