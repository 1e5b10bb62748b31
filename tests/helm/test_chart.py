"""The Helm chart (deploy/helm/herald), checked offline: `helm lint`, `helm template` for the
default values and each value set in ci/, every rendered object against the Kubernetes
schemas (kubernetes-validate) and KEDA's objects against the fields KEDA documents
(keda.schema.json), then the chart's promises read off the rendered manifests.

Run by scripts/test.sh (scripts/helm-check.sh) with HERALD_HELM (the helm binary) and
HERALD_BIN_DIR (Herald's built programs, whose --help lists the variables they accept).
"""

import json
import os
import pathlib
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "herald"
HELM = os.environ["HERALD_HELM"]
KUBERNETES_VERSION = "1.30.0"
VALUE_SETS = ["default"] + sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))
PROGRAMS = ["herald-ingest", "herald-dispatch", "herald-fanout", "herald-retry",
            "herald-metrics", "herald-events", "herald"]


class StrictLoader(yaml.SafeLoader):
    """Refuses a mapping with a key twice: PyYAML keeps the last, the API server may not."""


def _no_duplicate_keys(loader, node, deep=False):
    keys = [loader.construct_object(k, deep=deep) for k, _ in node.value]
    repeated = {k for k in keys if keys.count(k) > 1}
    if repeated:
        raise yaml.constructor.ConstructorError(None, None, f"keys given twice: {repeated}", node.start_mark)
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def helm(*args, check=True):
    return subprocess.run([HELM, *args], capture_output=True, text=True, check=check)


def render(value_set="default", *sets):
    args = ["template", "shop", str(CHART), "--namespace", "herald"]
    if value_set != "default":
        args += ["-f", str(CHART / "ci" / value_set)]
    for s in sets:
        args += ["--set", s]
    out = helm(*args)
    return [d for d in yaml.load_all(out.stdout, Loader=StrictLoader) if d]


def kinds(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def values(value_set):
    merged = yaml.safe_load((CHART / "values.yaml").read_text())
    if value_set != "default":
        for key, value in yaml.safe_load((CHART / "ci" / value_set).read_text()).items():
            if isinstance(value, dict):
                merged[key] = {**merged.get(key, {}), **value}
            else:
                merged[key] = value
    return merged


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_helm_lint_finds_nothing(value_set):
    args = ["lint", "--strict", str(CHART)]
    if value_set != "default":
        args += ["-f", str(CHART / "ci" / value_set)]
    out = helm(*args, check=False)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_matches_its_kubernetes_or_keda_schema(value_set):
    keda = json.loads((ROOT / "tests" / "helm" / "keda.schema.json").read_text())
    docs = render(value_set)
    assert docs
    for doc in docs:
        if doc["apiVersion"].startswith("keda.sh/"):
            jsonschema.validate(doc, keda)
        else:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_one_deployment_per_program_and_one_dispatcher_per_channel(value_set):
    docs = render(value_set)
    names = {d["metadata"]["name"].removeprefix("shop-herald-") for d in kinds(docs, "Deployment")}
    channels = values(value_set)["dispatch"]["channels"]
    expected = {"ingest", "fanout", "retry", "metrics", "events"} | {f"dispatch-{c}" for c in channels}
    assert names == expected


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_container_is_probed_bounded_and_unprivileged(value_set):
    docs = render(value_set)
    for d in kinds(docs, "Deployment") + kinds(docs, "Job"):
        pod = d["spec"]["template"]["spec"]
        name = d["metadata"]["name"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod.get("automountServiceAccountToken") is False, name
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, name
            assert sc["allowPrivilegeEscalation"] is False, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("privileged"), name
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(c["resources"][kind]), (name, kind)
            if d["kind"] == "Deployment":
                assert c["livenessProbe"]["httpGet"]["path"] == "/healthz", name
                assert c["readinessProbe"]["httpGet"]["path"] == "/readyz", name
                ports = {p["containerPort"] for p in c["ports"]}
                assert c["readinessProbe"]["httpGet"]["port"] in ports, name


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_dispatchers_outlive_their_shutdown_grace(value_set):
    docs = render(value_set)
    dispatchers = [d for d in kinds(docs, "Deployment") if "-dispatch-" in d["metadata"]["name"]]
    assert dispatchers
    for d in dispatchers:
        pod = d["spec"]["template"]["spec"]
        grace_ms = int(env_of(pod["containers"][0])["HERALD_SHUTDOWN_GRACE_MS"]["value"])
        assert pod["terminationGracePeriodSeconds"] * 1000 > grace_ms, d["metadata"]["name"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_autoscaling_stays_within_partitions_and_below_the_fanout_pause(value_set):
    docs = render(value_set)
    job = kinds(docs, "Job")[0]
    partitions = int(env_of(job["spec"]["template"]["spec"]["containers"][0])["HERALD_TOPIC_PARTITIONS"]["value"])
    fanout = next(d for d in kinds(docs, "Deployment") if d["metadata"]["name"].endswith("-fanout"))
    max_lag = int(env_of(fanout["spec"]["template"]["spec"]["containers"][0])["HERALD_FANOUT_MAX_LAG"]["value"])
    scalers = kinds(docs, "ScaledObject") + kinds(docs, "HorizontalPodAutoscaler")
    scaled = {s["spec"]["scaleTargetRef"]["name"] for s in scalers}
    deployments = {d["metadata"]["name"]: d for d in kinds(docs, "Deployment")}
    for name in deployments:
        if "-dispatch-" in name or name.endswith("-fanout"):
            assert name in scaled, f"{name} is not autoscaled"
            assert "replicas" not in deployments[name]["spec"], f"{name}: replicas would fight the scaler"
    for s in kinds(docs, "ScaledObject"):
        assert s["spec"]["maxReplicaCount"] <= partitions
        trigger = s["spec"]["triggers"][0]["metadata"]
        assert trigger["allowIdleConsumers"] == "false"
        if "-dispatch-" in s["metadata"]["name"]:
            assert int(trigger["lagThreshold"]) < max_lag
            channel = s["metadata"]["name"].rsplit("-", 1)[1]
            assert trigger["consumerGroup"] == f"herald-dispatch-{channel}"
            assert trigger["topic"] == f"herald.notify.{channel}"
    for h in kinds(docs, "HorizontalPodAutoscaler"):
        assert h["spec"]["maxReplicas"] <= partitions


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_workload_has_a_disruption_budget(value_set):
    docs = render(value_set)
    budgets = {p["metadata"]["name"] for p in kinds(docs, "PodDisruptionBudget")}
    for d in kinds(docs, "Deployment"):
        assert d["metadata"]["name"] in budgets


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_secrets_are_references_and_keys_a_mounted_directory(value_set):
    docs = render(value_set)
    assert not kinds(docs, "Secret"), "the chart holds no secret value"
    for d in kinds(docs, "Deployment"):
        pod = d["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for name, e in env_of(c).items():
                if any(w in name for w in ("SECRET", "PASSWORD", "TOKEN", "API_KEY")) and name != "HERALD_API_KEYS_FILE":
                    assert "valueFrom" in e and "value" not in e, (d["metadata"]["name"], name)
            assert "valueFrom" in env_of(c)["HERALD_REDIS_URL"]
            for m in c.get("volumeMounts", []):
                assert "subPath" not in m, "a subPath mount hides a revocation"
        keys = [v for v in pod["volumes"] if v["name"] == "keys"]
        if d["metadata"]["name"].endswith(("-ingest", "-metrics")):
            assert keys and keys[0]["secret"]["defaultMode"] == 0o440
        else:
            assert not keys, f"{d['metadata']['name']} gets no key file"
        provider_key = any("HERALD_PROVIDER_API_KEY" in env_of(c) for c in pod["containers"])
        assert provider_key == ("-dispatch-" in d["metadata"]["name"]), d["metadata"]["name"]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_each_program_reaches_redis_as_its_own_user(value_set):
    docs = render(value_set)
    for d in kinds(docs, "Deployment"):
        c = d["spec"]["template"]["spec"]["containers"][0]
        key = env_of(c)["HERALD_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"]
        assert c["command"][0] == f"herald-{key}", d["metadata"]["name"]


def test_only_ingest_is_open_beyond_the_release():
    docs = render()
    policies = {p["metadata"]["name"].removeprefix("shop-herald-"): p for p in kinds(docs, "NetworkPolicy")}
    assert policies["default-deny"]["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/instance"] == "shop"
    ingest = policies["ingest"]["spec"]
    assert ingest["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "ingest"
    internal = policies["internal"]["spec"]["ingress"][0]["from"]
    assert all("podSelector" in peer or "namespaceSelector" in peer for peer in internal)
    assert all(peer != {} for peer in internal), "an empty peer would open metrics to everyone"
    services = {s["metadata"]["name"]: s for s in kinds(docs, "Service")}
    assert services["shop-herald-metrics"]["spec"]["type"] == "ClusterIP"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_variable_the_chart_sets_is_one_a_program_accepts(value_set):
    bin_dir = pathlib.Path(os.environ["HERALD_BIN_DIR"])
    help_text = ""
    for p in PROGRAMS:
        help_text += subprocess.run([bin_dir / p, "--help"], capture_output=True, text=True, check=True).stdout
    help_text += subprocess.run([bin_dir / "herald", "topics", "create", "--help"],
                                capture_output=True, text=True, check=True).stdout
    docs = render(value_set)
    for d in kinds(docs, "Deployment") + kinds(docs, "Job"):
        for c in d["spec"]["template"]["spec"]["containers"]:
            for name in env_of(c):
                assert f"[env: {name}" in help_text, f"{d['metadata']['name']} sets {name}, which no program accepts"


def test_webhook_networks_reach_the_two_programs_that_check_webhook_urls():
    docs = render("default", "webhookAllowNetworks=10.0.0.0/8")
    for d in kinds(docs, "Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        checks = c["command"][0] in {"herald-ingest", "herald-events"}
        got = env_of(c).get("HERALD_WEBHOOK_ALLOW_NETWORKS", {}).get("value")
        assert got == ("10.0.0.0/8" if checks else None), d["metadata"]["name"]
    for d in kinds(render(), "Deployment"):
        (c,) = d["spec"]["template"]["spec"]["containers"]
        assert "HERALD_WEBHOOK_ALLOW_NETWORKS" not in env_of(c), "public addresses only by default"


def test_one_rules_file_reaches_ingest_fanout_and_retry_and_a_change_rolls_them():
    docs = render("rules-values.yaml")
    rules = values("rules-values.yaml")["rules"]
    (config,) = [c for c in kinds(docs, "ConfigMap") if c["metadata"]["name"].endswith("-rules")]
    assert config["data"]["rules.toml"] == rules
    readers = {"herald-ingest", "herald-fanout", "herald-retry"}
    for d in kinds(docs, "Deployment"):
        pod = d["spec"]["template"]
        (c,) = pod["spec"]["containers"]
        reads = c["command"][0] in readers
        assert ("HERALD_RULES" in env_of(c)) == reads, d["metadata"]["name"]
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert ("rules" in mounts) == reads, d["metadata"]["name"]
        if reads:
            assert env_of(c)["HERALD_RULES"]["value"] == mounts["rules"] + "/rules.toml"
            assert pod["metadata"]["annotations"]["checksum/rules"]
    changed = render("rules-values.yaml", "rules=[selection]")
    sums = lambda ds: {d["metadata"]["name"]: d["spec"]["template"]["metadata"].get("annotations", {}).get("checksum/rules") for d in kinds(ds, "Deployment")}
    before, after = sums(docs), sums(changed)
    assert any(before[n] and before[n] != after[n] for n in before), "a change of rules rolls the readers"
    assert not kinds(render(), "ConfigMap"), "no rules given: the built-in ones, no ConfigMap"


@pytest.mark.parametrize("setting,why", [
    ("dispatch.terminationGracePeriodSeconds=15", "longer than dispatch.shutdownGraceMs"),
    ("dispatch.maxReplicas=13", "above kafka.partitions"),
    ("fanout.maxReplicas=13", "above kafka.partitions"),
    ("dispatch.lagThreshold=10000", "below fanout.maxLag"),
    ("kafka.securityProtocol=sasl_ssl", "set kafka.saslSecret"),
    ("autoscaling.mode=sometimes", "keda, hpa or none"),
])
def test_the_chart_refuses_values_that_break_its_promises(setting, why):
    out = helm("template", "shop", str(CHART), "--set", setting, check=False)
    assert out.returncode != 0, f"{setting} was accepted"
    assert why in out.stderr, out.stderr
