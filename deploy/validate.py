#!/usr/bin/env python3
"""Validate rendered Spillway manifests (the output of `kubectl kustomize`).

Each document is checked against a schema:

* built-in kinds against the Kubernetes OpenAPI schemas of the given version,
  strictly (unknown fields are errors), with kubernetes-validate;
* ResourcePolicy (and any other custom resource whose CRD is passed with
  --crd) against the CRD's openAPIV3Schema, converted to JSON Schema: the
  `x-kubernetes-*` keys are dropped (int-or-string and preserve-unknown-fields
  are honoured), `nullable` allows null, and an object that lists
  `properties` allows no other fields, as the API server prunes or rejects
  them. CEL rules (x-kubernetes-validations) are not evaluated here; the API
  server enforces them.

Then the pieces are checked against each other:

* every KubeSchedulerConfiguration found in a ConfigMap: the fields the
  kube-scheduler strictly decodes (unknown fields fail), leader election on
  a lease this render's RBAC covers, percentageOfNodesToScore 100, and the
  Spillway extender stanza (verbs, weight > 0, nodeCacheCapable, HTTPS with a
  CA, client certificate, nvidia.com/gpu managed);
* the pod that runs it: --config, the client certificate and Spillway's
  --tls-cert/--tls-key/--client-ca resolve to mounted keys; --listen and
  --prefix match urlPrefix; --request-timeout is below httpTimeout; the
  serving certificate chains to caData and is valid for serverName, and the
  scheduler's client certificate chains to Spillway's --client-ca;
* every ResourcePolicy selects some workload of the render, and that
  workload uses the Spillway scheduler and requests a managed resource (else
  the extender never sees its pods).

Exit status 1 with one line per problem, naming the source, the object and
the field.
"""

import argparse
import base64
import binascii
import copy
import os
import re
import shutil
import subprocess
import sys
import tempfile
from urllib.parse import urlsplit

import jsonschema
import yaml

try:
    import kubernetes_validate
except ImportError:  # pragma: no cover - reported at startup
    kubernetes_validate = None

SCHEDULER_CONFIG_API = "kubescheduler.config.k8s.io/v1"

# Fields of kubescheduler.config.k8s.io/v1 as of Kubernetes 1.33
# (staging/src/k8s.io/kube-scheduler/config/v1/types.go and the embedded
# component-base types). The scheduler decodes its configuration strictly.
SCHED_TOP = {
    "apiVersion", "kind", "parallelism", "leaderElection", "clientConnection",
    "enableProfiling", "enableContentionProfiling", "percentageOfNodesToScore",
    "podInitialBackoffSeconds", "podMaxBackoffSeconds", "profiles", "extenders",
    "delayCacheUntilActive",
}
SCHED_LEADER = {
    "leaderElect", "leaseDuration", "renewDeadline", "retryPeriod",
    "resourceLock", "resourceName", "resourceNamespace",
}
SCHED_CLIENT = {"kubeconfig", "acceptContentTypes", "contentType", "qps", "burst"}
SCHED_PROFILE = {"schedulerName", "percentageOfNodesToScore", "plugins", "pluginConfig"}
SCHED_EXTENDER = {
    "urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "weight",
    "bindVerb", "enableHTTPS", "tlsConfig", "httpTimeout", "nodeCacheCapable",
    "managedResources", "ignorable",
}
SCHED_TLS = {"insecure", "serverName", "certFile", "keyFile", "caFile", "certData", "keyData", "caData"}
SCHED_MANAGED = {"name", "ignoredByScheduler"}

# The paths `spillway serve` answers under its --prefix.
SPILLWAY_VERBS = {
    "filterVerb": "filter",
    "prioritizeVerb": "prioritize",
    "preemptVerb": "preempt",
    "bindVerb": "bind",
}
SPILLWAY_DEFAULTS = {"--listen": "0.0.0.0:8443", "--prefix": "/scheduler"}

WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"}

DURATION_RE = re.compile(r"^(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+$")
DURATION_PART_RE = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def go_duration(value):
    """Seconds in a Go duration string such as 5s or 1m30s, or None."""
    if not isinstance(value, str) or not DURATION_RE.match(value):
        return None
    return sum(float(n) * DURATION_UNITS[u] for n, u in DURATION_PART_RE.findall(value))


def fmt_path(parts):
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(document)"


def obj_name(doc):
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    name = meta.get("name", "?")
    return f"{doc.get('kind', '?')} {ns + '/' if ns else ''}{name}"


class Report:
    def __init__(self, source):
        self.source = source
        self.errors = []

    def ok(self, what):
        print(f"  ok    {what}")

    def fail(self, where, field, message):
        line = f"{self.source}: {where}: {field}: {message}" if field else f"{self.source}: {where}: {message}"
        self.errors.append(line)
        print(f"  FAIL  {line}")


# --- CRD schemas --------------------------------------------------------------

def structural_to_jsonschema(node):
    """Convert a CRD structural schema node to plain JSON Schema."""
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "default", "description", "example", "externalDocs"):
            continue
        if key == "properties":
            out[key] = {k: structural_to_jsonschema(v) for k, v in value.items()}
        elif key in ("items", "not"):
            out[key] = structural_to_jsonschema(value)
        elif key == "additionalProperties":
            out[key] = value if isinstance(value, bool) else structural_to_jsonschema(value)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [structural_to_jsonschema(v) for v in value]
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out["type"] = ["integer", "string"]
    if node.get("nullable"):
        t = out.get("type")
        if isinstance(t, str):
            out["type"] = [t, "null"]
        elif isinstance(t, list) and "null" not in t:
            out["type"] = t + ["null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = list(out["enum"]) + [None]
    if ("properties" in node and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    return out


OBJECT_META = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 253},
        "namespace": {"type": "string"},
        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}


def load_crds(paths):
    """{(group, version, kind): (jsonschema validator, crd file)}"""
    schemas = {}
    for path in paths:
        with open(path) as f:
            for crd in yaml.safe_load_all(f):
                if not crd or crd.get("kind") != "CustomResourceDefinition":
                    continue
                spec = crd["spec"]
                for v in spec["versions"]:
                    raw = (v.get("schema") or {}).get("openAPIV3Schema")
                    if raw is None or not v.get("served", True):
                        continue
                    schema = structural_to_jsonschema(copy.deepcopy(raw))
                    props = schema.setdefault("properties", {})
                    props.setdefault("apiVersion", {"type": "string"})
                    props.setdefault("kind", {"type": "string"})
                    props.setdefault("metadata", OBJECT_META)
                    schema.setdefault("required", [])
                    for r in ("apiVersion", "kind", "metadata"):
                        if r not in schema["required"]:
                            schema["required"].append(r)
                    jsonschema.Draft7Validator.check_schema(schema)
                    key = (spec["group"], v["name"], spec["names"]["kind"])
                    schemas[key] = (jsonschema.Draft7Validator(schema), path)
    return schemas


def split_api_version(api_version):
    if "/" in api_version:
        group, version = api_version.split("/", 1)
        return group, version
    return "", api_version


# --- schema validation of one document ---------------------------------------

def validate_schema(doc, rep, crds, k8s_version, crd_groups):
    where = obj_name(doc)
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if not isinstance(api_version, str) or not isinstance(kind, str):
        rep.fail(where, "apiVersion/kind", "missing")
        return
    group, version = split_api_version(api_version)
    if group in crd_groups:
        entry = crds.get((group, version, kind))
        if entry is None:
            rep.fail(where, "apiVersion", f"no served version {version} of kind {kind} in the CRDs of group {group}")
            return
        validator, crd_file = entry
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        for e in errors:
            rep.fail(where, fmt_path(e.absolute_path), e.message)
        if not errors:
            rep.ok(f"{where} (CRD schema {crd_file}, unknown fields rejected)")
        return
    try:
        kubernetes_validate.validate(doc, k8s_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        rep.fail(where, fmt_path(e.path), f"{e.message} (Kubernetes {k8s_version} schema, strict)")
        return
    except kubernetes_validate.SchemaNotFoundError as e:
        rep.fail(where, "apiVersion/kind", e.message)
        return
    rep.ok(f"{where} (Kubernetes {k8s_version} schema, strict)")


# --- pod helpers -------------------------------------------------------------

def pod_template(doc):
    if doc.get("kind") == "Pod":
        return doc.get("spec") or {}
    if doc.get("kind") in WORKLOAD_KINDS:
        return ((doc.get("spec") or {}).get("template") or {}).get("spec") or {}
    return None


def pod_labels(doc):
    if doc.get("kind") == "Pod":
        return (doc.get("metadata") or {}).get("labels") or {}
    return (((doc.get("spec") or {}).get("template") or {}).get("metadata") or {}).get("labels") or {}


def container_argv(c):
    return [str(a) for a in (c.get("command") or []) + (c.get("args") or [])]


def flag(argv, name):
    """Value of --name=V or --name V, or None."""
    for i, a in enumerate(argv):
        if a == name and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith(name + "="):
            return a[len(name) + 1:]
    return None


class Render:
    """Index of one rendered stream, for resolving references."""

    def __init__(self, docs):
        self.docs = docs
        self.by_kind = {}
        for d in docs:
            self.by_kind.setdefault(d.get("kind"), []).append(d)

    def get(self, kind, namespace, name):
        for d in self.by_kind.get(kind, []):
            m = d.get("metadata") or {}
            if m.get("name") == name and m.get("namespace") == namespace:
                return d
        return None

    def resolve_file(self, namespace, pod, container, path):
        """Where a file path in a container comes from.

        Returns (status, detail, content): status "missing" (no volume mount
        covers the path), "external" (the Secret/ConfigMap is not in this
        render), "nokey" (it lacks the key) or "ok" with the bytes.
        """
        best = None
        for m in container.get("volumeMounts") or []:
            mp = m.get("mountPath", "").rstrip("/")
            if path.startswith(mp + "/") and (best is None or len(mp) > len(best["mountPath"].rstrip("/"))):
                best = m
        if best is None:
            return "missing", f"{path} is on no volume mounted in container {container.get('name')}", None
        rel = path[len(best["mountPath"].rstrip("/")) + 1:]
        if best.get("subPath"):
            return "external", "subPath mount", None
        vol = next((v for v in pod.get("volumes") or [] if v.get("name") == best.get("name")), None)
        if vol is None:
            return "missing", f"volumeMount {best.get('name')} names no volume of the pod", None
        if "secret" in vol:
            kind, name = "Secret", vol["secret"].get("secretName")
            items = vol["secret"].get("items")
        elif "configMap" in vol:
            kind, name = "ConfigMap", vol["configMap"].get("name")
            items = vol["configMap"].get("items")
        else:
            return "external", f"volume {vol.get('name')} is neither a Secret nor a ConfigMap", None
        key = rel
        if items:
            key = next((i["key"] for i in items if i.get("path") == rel), None)
            if key is None:
                return "nokey", f"volume {vol.get('name')} maps no key to {rel}", None
        src = self.get(kind, namespace, name)
        if src is None:
            return "external", f"{kind} {namespace}/{name} is not in this render", None
        if kind == "Secret":
            if key in (src.get("stringData") or {}):
                return "ok", f"{kind} {name} key {key}", str(src["stringData"][key]).encode()
            if key in (src.get("data") or {}):
                return "ok", f"{kind} {name} key {key}", base64.b64decode(src["data"][key])
        else:
            if key in (src.get("data") or {}):
                return "ok", f"{kind} {name} key {key}", str(src["data"][key]).encode()
            if key in (src.get("binaryData") or {}):
                return "ok", f"{kind} {name} key {key}", base64.b64decode(src["binaryData"][key])
        return "nokey", f"{kind} {namespace}/{name} has no key {key}", None


# --- openssl helpers ---------------------------------------------------------

class Certs:
    """Certificate checks with the openssl binary (no Python crypto library needed)."""

    def __init__(self):
        self.openssl = shutil.which("openssl")
        self.tmp = tempfile.mkdtemp(prefix="spillway-validate-")
        self.n = 0

    def _file(self, data):
        self.n += 1
        p = os.path.join(self.tmp, f"f{self.n}.pem")
        with open(p, "wb") as f:
            f.write(data)
        return p

    def subject(self, pem):
        """Subject of a PEM certificate, or None if it does not parse."""
        r = subprocess.run([self.openssl, "x509", "-noout", "-subject", "-in", self._file(pem)],
                           capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None

    def verify(self, ca_pem, cert_pem, purpose, hostname=None):
        cmd = [self.openssl, "verify", "-CAfile", self._file(ca_pem), "-purpose", purpose]
        if hostname:
            cmd += ["-verify_hostname", hostname]
        cmd.append(self._file(cert_pem))
        r = subprocess.run(cmd, capture_output=True, text=True)
        out = (r.stdout + r.stderr).replace(self.tmp + os.sep, "")
        return r.returncode == 0, " ".join(out.split())

    def key_matches(self, cert_pem, key_pem):
        a = subprocess.run([self.openssl, "x509", "-noout", "-pubkey", "-in", self._file(cert_pem)],
                           capture_output=True)
        b = subprocess.run([self.openssl, "pkey", "-pubout", "-in", self._file(key_pem)], capture_output=True)
        return a.returncode == 0 and b.returncode == 0 and a.stdout == b.stdout

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


# --- KubeSchedulerConfiguration ----------------------------------------------

def unknown_keys(rep, where, field, obj, allowed):
    if not isinstance(obj, dict):
        rep.fail(where, field, f"must be a mapping, got {type(obj).__name__}")
        return False
    for k in sorted(set(obj) - allowed):
        rep.fail(where, f"{field}.{k}" if field else k, "unknown field (the scheduler decodes its configuration strictly)")
    return True


def check_scheduler_config(rep, where, cfg, cm_namespace, args, render, certs, pod_ctx):
    """pod_ctx: None, or (namespace, pod spec, scheduler container, spillway container or None)."""
    before = len(rep.errors)
    if cfg.get("apiVersion") != SCHEDULER_CONFIG_API or cfg.get("kind") != "KubeSchedulerConfiguration":
        rep.fail(where, "apiVersion/kind", f"must be {SCHEDULER_CONFIG_API} KubeSchedulerConfiguration")
        return
    unknown_keys(rep, where, "", cfg, SCHED_TOP)
    if "clientConnection" in cfg:
        unknown_keys(rep, where, "clientConnection", cfg["clientConnection"], SCHED_CLIENT)

    le = cfg.get("leaderElection") or {}
    if unknown_keys(rep, where, "leaderElection", le, SCHED_LEADER):
        if le.get("leaderElect") is not True:
            rep.fail(where, "leaderElection.leaderElect", "must be true (replicas share one lease)")
        lease = le.get("resourceName")
        lease_ns = le.get("resourceNamespace")
        if not lease or lease == "kube-scheduler":
            rep.fail(where, "leaderElection.resourceName",
                     "must name this scheduler's own lease, not the default scheduler's kube-scheduler")
        if cm_namespace and lease_ns != cm_namespace:
            rep.fail(where, "leaderElection.resourceNamespace", f"is {lease_ns!r}, the deploy namespace is {cm_namespace!r}")
        if lease and lease_ns and render.by_kind.get("Role") is not None:
            if not lease_rbac_ok(render, lease_ns, lease):
                rep.fail(where, "leaderElection.resourceName",
                         f"no Role in {lease_ns} grants get and update on leases/{lease}")

    pct = cfg.get("percentageOfNodesToScore")
    if pct != 100:
        rep.fail(where, "percentageOfNodesToScore",
                 f"is {pct!r}, must be 100 (else the extender may never see the preferred unit's nodes)")
    profiles = cfg.get("profiles") or []
    names = []
    for i, p in enumerate(profiles):
        if unknown_keys(rep, where, f"profiles[{i}]", p, SCHED_PROFILE):
            names.append(p.get("schedulerName"))
            if p.get("percentageOfNodesToScore") not in (None, 100):
                rep.fail(where, f"profiles[{i}].percentageOfNodesToScore", "overrides the global 100")
    if args.scheduler_name not in names:
        rep.fail(where, "profiles", f"no profile with schedulerName {args.scheduler_name!r} (found {names})")

    extenders = cfg.get("extenders")
    if not isinstance(extenders, list) or not extenders:
        rep.fail(where, "extenders", "missing: the scheduler would never call Spillway")
        return
    binders = [i for i, e in enumerate(extenders) if isinstance(e, dict) and e.get("bindVerb")]
    for i, e in enumerate(extenders):
        unknown_keys(rep, where, f"extenders[{i}]", e, SCHED_EXTENDER)
    if len(binders) != 1:
        rep.fail(where, "extenders[*].bindVerb", f"exactly one extender (Spillway) must bind, found {len(binders)}")
        return
    i = binders[0]
    ext = extenders[i]
    f = f"extenders[{i}]"

    url = ext.get("urlPrefix")
    parsed = urlsplit(url) if isinstance(url, str) else None
    if not parsed or parsed.scheme != "https" or not parsed.hostname:
        rep.fail(where, f"{f}.urlPrefix", f"is {url!r}, must be an https:// URL")
        parsed = None
    for key, want in SPILLWAY_VERBS.items():
        if key == "prioritizeVerb" and not ext.get(key):
            continue  # optional: the profile's MostAllocated scoring packs GPUs instead
        if ext.get(key) != want:
            rep.fail(where, f"{f}.{key}", f"is {ext.get(key)!r}, must be {want!r} (the path spillway serve answers)")
    weight = ext.get("weight")
    prioritize = bool(ext.get("prioritizeVerb"))
    if prioritize and (not isinstance(weight, int) or isinstance(weight, bool) or weight <= 0):
        rep.fail(where, f"{f}.weight", f"is {weight!r}, must be a positive integer when prioritizeVerb is set")
    if not prioritize:
        packing = [p for p in profiles if isinstance(p, dict) and p.get("schedulerName") == args.scheduler_name
                   and packs_gpus(p, args.managed_resource)]
        if not packing:
            rep.fail(where, "profiles[*].pluginConfig",
                     f"without prioritizeVerb the {args.scheduler_name} profile must pack {args.managed_resource}: "
                     f"NodeResourcesFit scoringStrategy MostAllocated with {args.managed_resource} among its resources")
    if ext.get("enableHTTPS") is not True:
        rep.fail(where, f"{f}.enableHTTPS", "must be true")
    if ext.get("nodeCacheCapable") is not True:
        rep.fail(where, f"{f}.nodeCacheCapable", "must be true (Spillway keeps its own node cache and expects NodeNames)")
    if ext.get("ignorable") is True:
        rep.fail(where, f"{f}.ignorable", "must be false: an unreachable Spillway must not let pods skip their units")
    timeout = go_duration(ext.get("httpTimeout"))
    if timeout is None or timeout <= 0:
        rep.fail(where, f"{f}.httpTimeout", f"is {ext.get('httpTimeout')!r}, must be a positive duration such as 5s")
    managed = ext.get("managedResources")
    gpu = None
    if isinstance(managed, list):
        for j, m in enumerate(managed):
            if unknown_keys(rep, where, f"{f}.managedResources[{j}]", m, SCHED_MANAGED) and m.get("name") == args.managed_resource:
                gpu = m
    if gpu is None:
        rep.fail(where, f"{f}.managedResources", f"must list {args.managed_resource}")
    elif gpu.get("ignoredByScheduler") is True:
        rep.fail(where, f"{f}.managedResources", f"{args.managed_resource}: ignoredByScheduler must be false (the scheduler checks free GPUs)")

    tls = ext.get("tlsConfig")
    ca_pem = None
    if not isinstance(tls, dict):
        rep.fail(where, f"{f}.tlsConfig", "missing: without a CA the scheduler skips certificate checks")
        tls = {}
    else:
        unknown_keys(rep, where, f"{f}.tlsConfig", tls, SCHED_TLS)
    if tls.get("insecure") is True:
        rep.fail(where, f"{f}.tlsConfig.insecure", "must not be true")
    ca_data = tls.get("caData")
    if not ca_data:
        rep.fail(where, f"{f}.tlsConfig.caData", "is empty: the CA of Spillway's serving certificate, base64")
    else:
        try:
            ca_pem = base64.b64decode(str(ca_data), validate=True)
        except (binascii.Error, ValueError) as e:
            rep.fail(where, f"{f}.tlsConfig.caData", f"is not valid base64: {e}")
        if ca_pem is not None:
            subject = certs.subject(ca_pem) if b"-----BEGIN CERTIFICATE-----" in ca_pem else None
            if subject is None:
                rep.fail(where, f"{f}.tlsConfig.caData", "does not decode to a PEM certificate")
                ca_pem = None
    if not tls.get("serverName"):
        rep.fail(where, f"{f}.tlsConfig.serverName", "must be set: the name in Spillway's serving certificate")
    client_auth = bool(tls.get("certFile") or tls.get("certData"))
    if not client_auth or not (tls.get("keyFile") or tls.get("keyData")):
        rep.fail(where, f"{f}.tlsConfig.certFile/keyFile", "must be set: the scheduler authenticates to Spillway with a client certificate")

    if pod_ctx is not None:
        check_pod_against_config(rep, where, f, ext, tls, parsed, timeout, ca_pem, render, certs, pod_ctx)

    if len(rep.errors) == before:
        rep.ok(f"{where}: scheduler config: leader election on lease {le.get('resourceNamespace')}/{le.get('resourceName')}, "
               f"percentageOfNodesToScore 100, profile {args.scheduler_name}")
        verbs = "filter/prioritize/preempt/bind" if prioritize else "filter/preempt/bind (GPUs packed by MostAllocated)"
        if prioritize:
            verbs += f", weight {weight}"
        rep.ok(f"{where}: extender {url}: {verbs}, nodeCacheCapable, "
               f"httpTimeout {ext.get('httpTimeout')}, not ignorable, manages {args.managed_resource}, "
               f"TLS to {tls.get('serverName')} with caData ({certs.subject(ca_pem) if ca_pem else '?'}) and a client certificate")


def packs_gpus(profile, resource):
    """True when the profile's NodeResourcesFit scores by MostAllocated over `resource` and is not disabled."""
    plugins = profile.get("plugins") if isinstance(profile.get("plugins"), dict) else {}
    score = plugins.get("score") if isinstance(plugins.get("score"), dict) else {}
    disabled = score.get("disabled") if isinstance(score.get("disabled"), list) else []
    if any(isinstance(d, dict) and d.get("name") in ("NodeResourcesFit", "*") for d in disabled):
        enabled = score.get("enabled") if isinstance(score.get("enabled"), list) else []
        if not any(isinstance(e, dict) and e.get("name") == "NodeResourcesFit" for e in enabled):
            return False
    configs = profile.get("pluginConfig") if isinstance(profile.get("pluginConfig"), list) else []
    for pc in configs:
        if not isinstance(pc, dict) or pc.get("name") != "NodeResourcesFit":
            continue
        args = pc.get("args") if isinstance(pc.get("args"), dict) else {}
        strategy = args.get("scoringStrategy") if isinstance(args.get("scoringStrategy"), dict) else {}
        if strategy.get("type") != "MostAllocated":
            continue
        resources = strategy.get("resources") if isinstance(strategy.get("resources"), list) else []
        for r in resources:
            weight = r.get("weight") if isinstance(r, dict) else None
            if isinstance(r, dict) and r.get("name") == resource and isinstance(weight, int) \
                    and not isinstance(weight, bool) and weight > 0:
                return True
    return False


def lease_rbac_ok(render, namespace, lease):
    for role in render.by_kind.get("Role", []):
        if (role.get("metadata") or {}).get("namespace") != namespace:
            continue
        verbs = set()
        for rule in role.get("rules") or []:
            if "coordination.k8s.io" in (rule.get("apiGroups") or []) and "leases" in (rule.get("resources") or []):
                names = rule.get("resourceNames")
                if not names or lease in names:
                    verbs |= set(rule.get("verbs") or [])
        if {"get", "update"} <= verbs or "*" in verbs:
            return True
    return False


def check_pod_against_config(rep, where, f, ext, tls, url, timeout, ca_pem, render, certs, pod_ctx):
    namespace, pod, sched, spill = pod_ctx
    files = {}
    for key in ("certFile", "keyFile", "caFile"):
        path = tls.get(key)
        if not path:
            continue
        status, detail, content = render.resolve_file(namespace, pod, sched, path)
        if status in ("missing", "nokey"):
            rep.fail(where, f"{f}.tlsConfig.{key}", detail)
        files[key] = content
    if spill is None:
        rep.fail(where, "pod", "no container runs `spillway serve` next to the scheduler")
        return
    argv = container_argv(spill)
    listen = flag(argv, "--listen") or SPILLWAY_DEFAULTS["--listen"]
    prefix = flag(argv, "--prefix") or SPILLWAY_DEFAULTS["--prefix"]
    if url is not None:
        host, _, port = listen.rpartition(":")
        url_port = str(url.port or 443)
        if port != url_port or host not in ("0.0.0.0", "[::]", "::", url.hostname):
            rep.fail(where, f"{f}.urlPrefix", f"{url.geturl()} does not reach spillway --listen={listen}")
        if url.path.rstrip("/") != prefix.rstrip("/"):
            rep.fail(where, f"{f}.urlPrefix", f"path {url.path!r} differs from spillway --prefix={prefix}")
        if url.hostname not in ("127.0.0.1", "localhost", "::1"):
            rep.fail(where, f"{f}.urlPrefix", "Spillway runs in the scheduler's pod: call it on loopback")
    req_timeout = go_duration(flag(argv, "--request-timeout") or "")
    if req_timeout is not None and timeout is not None and req_timeout >= timeout:
        rep.fail(where, f"{f}.httpTimeout", f"must exceed spillway --request-timeout ({req_timeout:g}s)")
    served = {}
    for fl in ("--tls-cert", "--tls-key", "--client-ca"):
        path = flag(argv, fl)
        if not path:
            rep.fail(where, f"spillway {fl}", "missing: the extender must serve HTTPS and require client certificates")
            continue
        status, detail, content = render.resolve_file(namespace, pod, spill, path)
        if status in ("missing", "nokey"):
            rep.fail(where, f"spillway {fl}", detail)
        served[fl] = content

    # The certificates themselves, when the render carries them.
    server_crt, server_key, client_ca = served.get("--tls-cert"), served.get("--tls-key"), served.get("--client-ca")
    if ca_pem and server_crt:
        ok, out = certs.verify(ca_pem, server_crt, "sslserver", tls.get("serverName"))
        if not ok:
            rep.fail(where, f"{f}.tlsConfig.caData",
                     f"Spillway's serving certificate does not verify against it for {tls.get('serverName')}: {out}")
        else:
            rep.ok(f"{where}: serving certificate verifies against caData for {tls.get('serverName')}")
    if server_crt and server_key and not certs.key_matches(server_crt, server_key):
        rep.fail(where, "spillway --tls-key", "does not match --tls-cert")
    client_crt, client_key = files.get("certFile"), files.get("keyFile")
    if client_ca and client_crt:
        ok, out = certs.verify(client_ca, client_crt, "sslclient")
        if not ok:
            rep.fail(where, f"{f}.tlsConfig.certFile", f"the scheduler's client certificate does not verify against spillway --client-ca: {out}")
        else:
            rep.ok(f"{where}: scheduler client certificate verifies against spillway --client-ca")
    if client_crt and client_key and not certs.key_matches(client_crt, client_key):
        rep.fail(where, f"{f}.tlsConfig.keyFile", "does not match certFile")


def check_scheduler_configs(rep, render, args, certs):
    """Returns how many scheduler configurations were checked through a pod's --config."""
    seen = set()
    count = 0
    # Through the pods that run a scheduler: the file --config names.
    for doc in render.docs:
        pod = pod_template(doc)
        if pod is None:
            continue
        namespace = (doc.get("metadata") or {}).get("namespace")
        containers = pod.get("containers") or []
        spill = next((c for c in containers if container_argv(c)[:1] == ["serve"]
                      or container_argv(c)[:2] == ["spillway", "serve"]), None)
        for c in containers:
            path = flag(container_argv(c), "--config")
            if not path:
                continue
            where = f"{obj_name(doc)} ({c.get('name')} --config)"
            status, detail, content = render.resolve_file(namespace, pod, c, path)
            if status != "ok":
                if status != "external":
                    rep.fail(where, "--config", detail)
                continue
            try:
                cfg = yaml.safe_load(content)
            except yaml.YAMLError as e:
                rep.fail(where, "--config", f"{detail}: not YAML: {e}")
                continue
            seen.add(detail)
            count += 1
            rep.ok(f"{where}: {path} is {detail}")
            check_scheduler_config(rep, where, cfg, namespace, args, render, certs,
                                   (namespace, pod, c, spill))
    # Any other KubeSchedulerConfiguration in a ConfigMap.
    for cm in render.by_kind.get("ConfigMap", []):
        for key, value in ((cm.get("data") or {}).items()):
            detail = f"ConfigMap {(cm.get('metadata') or {}).get('name')} key {key}"
            if detail in seen:
                continue
            try:
                cfg = yaml.safe_load(value)
            except yaml.YAMLError:
                continue
            if isinstance(cfg, dict) and cfg.get("kind") == "KubeSchedulerConfiguration":
                check_scheduler_config(rep, f"{obj_name(cm)} key {key}", cfg, (cm.get("metadata") or {}).get("namespace"),
                                       args, render, certs, None)
    return count


# --- ResourcePolicy ↔ workloads ----------------------------------------------

def check_policies_select_workloads(rep, render, args, crd_kinds):
    for doc in render.docs:
        if (split_api_version(str(doc.get("apiVersion")))[0], doc.get("kind")) not in crd_kinds:
            continue
        if doc.get("kind") != "ResourcePolicy":
            continue
        ns = (doc.get("metadata") or {}).get("namespace")
        selector = ((doc.get("spec") or {}).get("selector")) or {}
        workloads = [w for w in render.docs if w.get("kind") in WORKLOAD_KINDS | {"Pod"}
                     and (w.get("metadata") or {}).get("namespace") == ns]
        if not workloads:
            continue  # the workload lives elsewhere
        where = obj_name(doc)
        matched = [w for w in workloads if all(pod_labels(w).get(k) == v for k, v in selector.items())]
        if not matched:
            rep.fail(where, "spec.selector", f"{selector} matches no workload's pod labels in namespace {ns}")
            continue
        for w in matched:
            pod = pod_template(w) or {}
            spec_path = "spec" if w.get("kind") == "Pod" else "spec.template.spec"
            problems = []
            if pod.get("schedulerName") != args.scheduler_name:
                problems.append((f"{spec_path}.schedulerName",
                                 f"is {pod.get('schedulerName')!r}, not {args.scheduler_name!r}"))
            wants = any(args.managed_resource in ((c.get("resources") or {}).get(part) or {})
                        for c in pod.get("containers") or [] for part in ("requests", "limits"))
            if not wants:
                problems.append((f"{spec_path}.containers[*].resources",
                                 f"no container requests {args.managed_resource}, so the extender never sees its pods"))
            for field, message in problems:
                rep.fail(obj_name(w), field, f"(selected by {where}) {message}")
            if not problems:
                rep.ok(f"{where} selects {obj_name(w)}: schedulerName {args.scheduler_name}, requests {args.managed_resource}")


# --- main --------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+", metavar="LABEL=FILE|FILE",
                    help="rendered manifests; LABEL names them in messages")
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("--crd", action="append", default=[], help="CRD file for custom resources (repeatable)")
    ap.add_argument("--require-scheduler-config", action="store_true",
                    help="fail unless the render carries a KubeSchedulerConfiguration")
    ap.add_argument("--scheduler-name", default="spillway-scheduler")
    ap.add_argument("--managed-resource", default="nvidia.com/gpu")
    args = ap.parse_args()

    if kubernetes_validate is None:
        sys.exit("error: the Python package kubernetes-validate is not installed")
    if shutil.which("openssl") is None:
        sys.exit("error: openssl not found (needed to parse the certificates)")

    crds = load_crds(args.crd)
    crd_groups = {g for g, _, _ in crds}
    crd_kinds = {(g, k) for g, _, k in crds}
    certs = Certs()
    failures = []
    try:
        for spec in args.files:
            label, _, path = spec.rpartition("=")
            label = label or path
            rep = Report(label)
            try:
                with open(path) as fh:
                    docs = [d for d in yaml.safe_load_all(fh) if d]
            except (OSError, yaml.YAMLError) as e:
                rep.fail(path, "", f"cannot read: {e}")
                failures += rep.errors
                continue
            print(f"{label}: {len(docs)} document{'s' if len(docs) != 1 else ''}")
            if not docs:
                rep.fail(path, "", "renders no documents")
            for d in docs:
                if not isinstance(d, dict):
                    rep.fail(path, "", f"document is a {type(d).__name__}, not a mapping")
                    continue
                validate_schema(d, rep, crds, args.kubernetes_version, crd_groups)
            render = Render([d for d in docs if isinstance(d, dict)])
            n = check_scheduler_configs(rep, render, args, certs)
            if args.require_scheduler_config and n == 0:
                rep.fail(path, "", "no KubeSchedulerConfiguration reachable from a pod's --config")
            check_policies_select_workloads(rep, render, args, crd_kinds)
            failures += rep.errors
    finally:
        certs.close()
    if failures:
        print(f"\n{len(failures)} problem(s):", file=sys.stderr)
        for line in failures:
            print(f"  {line}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
