"""Tests of charts/oz-agent-worker with the real Helm engine (PyPI helm-python-sdk, Helm's Go
SDK as a shared library) and the test kube-apiserver. Run by tests/scenarios/deploy.rs, which
passes the tools set up by scripts/setup/60-deploy.sh.

  chart.py check --kubeconfig K --kubectl BIN --worker-bin BIN
      lint; the schema rejects typos; renders with the default values, a values file in the Go
      chart's style and every metrics exporter, checking what each renders; the worker's own
      `check` accepts every rendered config.yaml; every rendering is applied to the API server
      with server-side validation (a real `helm install` for the defaults, `kubectl apply
      --server-side --dry-run=server` for the others), in a fresh namespace deleted afterwards.
  chart.py rbac --kubeconfig K --kubectl BIN --namespace NS --out DIR [--without-secrets]
      installs the chart into the existing namespace NS; with --without-secrets, the Role
      loses its `secrets: create` rule (what Warp's Go chart grants); writes DIR/kubeconfig, a
      token of the chart's ServiceAccount, for the worker's preflight.

Every failed expectation exits non-zero with a message naming it.
"""

import argparse
import copy
import json
import logging
import os
import pathlib
import secrets
import subprocess
import sys
import tempfile

import helm_python
import yaml
from helm_python import _native as helm_native

ROOT = pathlib.Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "oz-agent-worker"
RBAC_DOC = ROOT / "docs" / "kubernetes-rbac.yaml"
GO_VALUES = pathlib.Path(__file__).resolve().parent / "go-style-values.yaml"
GO_ARGS = ["--config-file", "/etc/oz-agent-worker/config.yaml", "--backend", "kubernetes"]

# Helm's own log through Python's, warnings and up (not the INFO line about the RBAC symlink).
helm_python.enable_logging(logging.WARNING)


def fail(message):
    sys.exit(f"chart.py: {message}")


def expect(condition, message):
    if not condition:
        fail(message)


def render(values, name="oz", namespace="oz-ns"):
    chart = helm_python.Chart.load(CHART)
    rendered = chart.render(values, name=name, namespace=namespace)
    objects = []
    for path, text in sorted(rendered.items()):
        if not path.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def find(objects, kind, suffix=""):
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].endswith(suffix)]
    return found[0] if found else None


def container(objects):
    deployment = find(objects, "Deployment")
    expect(deployment is not None, "no Deployment rendered")
    return deployment["spec"]["template"]["spec"]["containers"][0]


def env_of(objects):
    return [(e["name"], e.get("value", e.get("valueFrom"))) for e in container(objects)["env"]]


def config_of(objects):
    config_map = find(objects, "ConfigMap", "-config")
    return config_map["data"]["config.yaml"]


def with_worker(values=None, worker_id="chart-test"):
    values = copy.deepcopy(values or {})
    values.setdefault("worker", {}).setdefault("workerId", worker_id)
    return values


def kubectl(args, kubeconfig, kubectl_bin, stdin=None):
    result = subprocess.run(
        [kubectl_bin, "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if result.returncode != 0:
        fail(f"kubectl {' '.join(args)} failed: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def worker_check(worker_bin, config_text):
    """The worker's own validation of a rendered config.yaml (no cluster contacted)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
        file.write(config_text)
        file.flush()
        result = subprocess.run(
            [worker_bin, "check", "--config-file", file.name, "--backend", "kubernetes"],
            env={**os.environ, "WARP_API_KEY": "chart-test-key"},
            capture_output=True,
            text=True,
            timeout=60,
        )
    expect(
        result.returncode == 0,
        f"the worker rejects the rendered config.yaml (exit {result.returncode}): "
        f"{result.stderr.strip()}\n{config_text}",
    )


def check_lint_and_schema():
    report = helm_python.lint(CHART, with_worker(), strict=True, kube_version="v1.30.0")
    serious = [m for m in report["messages"] if m["severity"] >= 2]
    expect(not report["errors"] and not serious, f"helm lint: {report}")
    chart = helm_python.Chart.load(CHART)
    for typo, key in [
        ({"worker": {"workerID": "x"}}, "workerID"),
        ({"metrics": {"exporter": "prometheos"}}, "exporter"),
        ({"metrics": {"enable": True}}, "enable"),
        ({"kubernetesBackend": {"imagePullPolicy": "Sometimes"}}, "imagePullPolicy"),
        ({"worker": {"workerId": "x", "logLevel": "verbose"}}, "logLevel"),
        ({"replicas": 2}, "replicas"),
        ({"worker": {"workerId": "warp-reserved"}}, "workerId"),
    ]:
        try:
            chart.render(typo, name="oz", namespace="oz-ns")
        except helm_python.HelmValuesError as err:
            expect(key in str(err), f"the schema error for {typo} does not name {key}: {err}")
        else:
            fail(f"the schema accepted {typo}")
    try:
        chart.render({}, name="oz", namespace="oz-ns")
    except helm_python.HelmError as err:
        expect("worker.workerId is required" in str(err), f"missing workerId: {err}")
    else:
        fail("rendering without worker.workerId succeeded")


def check_default(worker_bin):
    objects = render(with_worker())
    main = container(objects)
    app_version = helm_python.Chart.load(CHART).metadata["appVersion"]
    expect(main["image"] == f"warpdotdev/oz-agent-worker:{app_version}", f"image {main['image']}")
    expect(
        main["args"]
        == GO_ARGS
        + [
            "--log-level", "info",
            "--web-socket-url", "wss://oz.warp.dev/api/v1/selfhosted/worker/ws",
            "--server-root-url", "https://app.warp.dev",
            "--health-listen", "0.0.0.0:8080",
        ],
        f"args {main['args']}",
    )
    expect(
        env_of(objects)
        == [
            ("WARP_API_KEY", {"secretKeyRef": {"name": "oz-agent-worker", "key": "WARP_API_KEY"}}),
            ("OTEL_METRICS_EXPORTER", "none"),
        ],
        f"env {env_of(objects)}",
    )
    expect(main["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}, "liveness")
    expect(main["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}, "readiness")
    expect(main["securityContext"]["readOnlyRootFilesystem"] is True, "read-only root fs")
    expect(main["securityContext"]["capabilities"] == {"drop": ["ALL"]}, "capabilities")
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    expect(pod["securityContext"]["runAsUser"] == 10001, "uid 10001")
    expect(pod["terminationGracePeriodSeconds"] == 30, "grace period")
    expect(find(objects, "Deployment")["spec"]["replicas"] == 1, "replicas")
    pdb = find(objects, "PodDisruptionBudget")
    expect(pdb is not None and pdb["spec"]["maxUnavailable"] == 1, f"PDB {pdb}")
    for absent in ["Service", "PodMonitor", "Secret"]:
        expect(find(objects, absent) is None, f"{absent} rendered by default")
    expect(find(objects, "ConfigMap", "-grafana-dashboard") is None, "dashboard by default")
    # The Role is exactly docs/kubernetes-rbac.yaml's, in the task namespace.
    role = find(objects, "Role")
    documented = yaml.safe_load(RBAC_DOC.read_text())
    expect(role["rules"] == documented["rules"], f"Role rules {role['rules']} != the documented ones")
    expect(role["metadata"]["namespace"] == "oz-ns", "Role namespace")
    config = yaml.safe_load(config_of(objects))
    expect(
        config
        == {
            "worker_id": "chart-test",
            "cleanup": True,
            "max_concurrent_tasks": 0,
            "backend": {
                "kubernetes": {
                    "namespace": "oz-ns",
                    "image_pull_policy": "IfNotPresent",
                    "use_image_volumes": False,
                    "unschedulable_timeout": "30s",
                    "active_deadline_seconds": 28800,
                    "ttl_seconds_after_finished": 86400,
                }
            },
        },
        f"default config.yaml {config}",
    )
    worker_check(worker_bin, config_of(objects))
    # replicaCount, the dashboard and the Go chart's probe without the health listener.
    objects = render(
        with_worker({"replicaCount": 3, "health": {"enabled": False}, "grafanaDashboard": {"enabled": True}})
    )
    expect(find(objects, "Deployment")["spec"]["replicas"] == 3, "replicaCount")
    main = container(objects)
    expect(main["livenessProbe"]["exec"]["command"] == ["/bin/sh", "-c", "kill -0 1"], "kill -0 1")
    expect("readinessProbe" not in main and "--health-listen" not in main["args"], "health off")
    dashboard = find(objects, "ConfigMap", "-grafana-dashboard")
    expect(dashboard["metadata"]["labels"]["grafana_dashboard"] == "1", "dashboard label")
    expect(
        json.loads(dashboard["data"]["oz-agent-worker.json"])
        == json.loads((CHART / "files" / "grafana-dashboard.json").read_text()),
        "dashboard JSON",
    )
    return with_worker()


def check_go_style(worker_bin):
    values = yaml.safe_load(GO_VALUES.read_text())
    objects = render(values)
    main = container(objects)
    expect(main["image"] == "registry.example.com/oz/oz-agent-worker:v2026-06-01-10-09-37", "image")
    expect(
        main["args"]
        == GO_ARGS
        + [
            "--log-level", "debug",
            "--web-socket-url", "wss://oz.example.com/api/v1/selfhosted/worker/ws",
            "--server-root-url", "https://app.example.com",
            "--health-listen", "0.0.0.0:8080",
            "--no-cleanup",
        ],
        f"args {main['args']}",
    )
    expect(
        env_of(objects)
        == [
            ("WARP_API_KEY", {"secretKeyRef": {"name": "oz-worker-key", "key": "API_KEY"}}),
            ("HTTPS_PROXY", "http://proxy.example.com:3128"),
            ("OTEL_METRICS_EXPORTER", "prometheus"),
            ("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0"),
            ("OTEL_EXPORTER_PROMETHEUS_PORT", "9464"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "30000"),
        ],
        f"env {env_of(objects)}",
    )
    expect(main["livenessProbe"]["exec"]["command"] == ["/bin/sh", "-c", "kill -0 1"], "probe")
    expect(main["resources"]["requests"] == {"cpu": "200m", "memory": "256Mi"}, "resources")
    deployment = find(objects, "Deployment")
    expect(deployment["metadata"]["name"] == "oz-worker", "fullnameOverride")
    pod = deployment["spec"]["template"]
    expect(pod["metadata"]["labels"]["team"] == "agents", "podLabels")
    expect(pod["metadata"]["annotations"]["example.com/pod"] == "yes", "podAnnotations")
    expect("checksum/secret" in pod["metadata"]["annotations"], "secret checksum")
    expect(pod["spec"]["serviceAccountName"] == "oz-worker-sa", "serviceAccount.name")
    expect(pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}], "pullSecrets")
    expect(pod["spec"]["terminationGracePeriodSeconds"] == 45, "grace period")
    expect(pod["spec"]["tolerations"][0]["key"] == "dedicated", "tolerations")
    secret = find(objects, "Secret")
    expect(secret["stringData"] == {"API_KEY": "wk-test-not-a-real-key"}, "api key Secret")
    service = find(objects, "Service", "-metrics")
    expect(service["metadata"]["annotations"]["prometheus.io/scrape"] == "true", "scrape")
    expect(service["spec"]["ports"][0]["port"] == 9464, "metrics port")
    config = yaml.safe_load(config_of(objects))
    kubernetes = config["backend"]["kubernetes"]
    expect(config["worker_id"] == "go-style-worker" and config["max_concurrent_tasks"] == 4, "config")
    expect(config["idle_on_complete"] == "10m", "idle_on_complete")
    expect(kubernetes["setup_command"] == "echo setting up\ngit config --global user.name Oz", "setup")
    expect(kubernetes["teardown_command"] == "echo done", "teardown")
    expect(kubernetes["pod_template"] == values["kubernetesBackend"]["podTemplate"], "pod_template")
    expect(
        kubernetes["preflight_resources"] == values["kubernetesBackend"]["preflightResources"],
        "preflight_resources",
    )
    for key, want in [
        ("namespace", "oz-ns"), ("default_image", "ubuntu:24.04"), ("image_pull_policy", "Always"),
        ("preflight_image", "busybox:1.36"), ("extra_labels", {"team": "agents"}),
        ("extra_annotations", {"example.com/owner": "platform"}),
        ("active_deadline_seconds", 3600), ("ttl_seconds_after_finished", 600),
        ("workspace_size_limit", "8Gi"), ("unschedulable_timeout", "2m"),
    ]:
        expect(kubernetes.get(key) == want, f"config {key}: {kubernetes.get(key)!r} != {want!r}")
    worker_check(worker_bin, config_of(objects))
    # With cleanup off there is no TTL, as in the Go chart.
    values["worker"]["cleanup"] = False
    config = yaml.safe_load(config_of(render(values)))
    expect("ttl_seconds_after_finished" not in config["backend"]["kubernetes"], "TTL without cleanup")
    return yaml.safe_load(GO_VALUES.read_text())


def check_exporters(worker_bin):
    renderings = []
    otlp_env = [{"name": "OTEL_EXPORTER_OTLP_ENDPOINT", "value": "http://collector:4318"}]
    for exporter in ["prometheus", "otlp", "console", "none"]:
        for pod_monitor in [False, True]:
            values = with_worker(
                {"metrics": {"enabled": True, "exporter": exporter, "port": 9999,
                             "extraEnv": otlp_env if exporter == "otlp" else [],
                             "podMonitor": {"create": pod_monitor}}}
            )
            objects = render(values)
            env = env_of(objects)[1:]
            main = container(objects)
            want = [("OTEL_METRICS_EXPORTER", exporter)]
            if exporter == "prometheus":
                want += [("OTEL_EXPORTER_PROMETHEUS_HOST", "0.0.0.0"), ("OTEL_EXPORTER_PROMETHEUS_PORT", "9999")]
            if exporter == "otlp":
                want += [("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318")]
            expect(env == want, f"{exporter}: env {env} != {want}")
            ports = {p["name"]: p["containerPort"] for p in main["ports"]}
            service = find(objects, "Service", "-metrics")
            monitor = find(objects, "PodMonitor")
            if exporter == "prometheus":
                expect(ports == {"metrics": 9999, "health": 8080}, f"ports {ports}")
                expect(service["spec"]["ports"][0]["port"] == 9999, "service port")
                expect((monitor is not None) == pod_monitor, f"PodMonitor with create={pod_monitor}")
                if monitor:
                    endpoint = monitor["spec"]["podMetricsEndpoints"][0]
                    expect(endpoint == {"port": "metrics", "path": "/metrics", "interval": "30s",
                                        "scrapeTimeout": "10s"}, f"PodMonitor {endpoint}")
            else:
                expect(ports == {"health": 8080}, f"{exporter}: ports {ports}")
                expect(service is None and monitor is None, f"{exporter}: Service/PodMonitor")
            worker_check(worker_bin, config_of(objects))
            if not pod_monitor:  # no monitoring.coreos.com CRDs on the test API server
                renderings.append((f"metrics-{exporter}", values))
    return renderings


def fresh_namespace(kubeconfig, kubectl_bin, what):
    name = f"oz-deploy-{what}-{secrets.token_hex(3)}"
    kubectl(["create", "namespace", name], kubeconfig, kubectl_bin)
    return name


def apply_all(renderings, kubeconfig, kubectl_bin):
    """Server-side validation of every rendering, by values (an invalid field fails), plus one
    real `helm install` of the defaults; all in one fresh namespace, deleted afterwards."""
    namespace = fresh_namespace(kubeconfig, kubectl_bin, "apply")
    config = helm_python.Config(kubeconfig_path=kubeconfig, namespace=namespace)
    chart = helm_python.Chart.load(CHART)
    version = json.loads(kubectl(["version", "-o", "json"], kubeconfig, kubectl_bin))
    kube_version = version["serverVersion"]["gitVersion"]
    try:
        for label, values in renderings:
            # Rendered for the API server's version (`helm template --kube-version`), as
            # `helm install` renders with the cluster's. The SDK's Python wrapper does not expose
            # the option yet; its native render takes it.
            rendered = json.loads(
                helm_native.call_string(
                    "helm_render", chart._raw(), json.dumps(values),
                    json.dumps({"name": label, "namespace": namespace, "kube_version": kube_version}),
                )
            )
            manifest = "\n---\n".join(t for p, t in sorted(rendered.items()) if p.endswith(".yaml"))
            kubectl(
                ["apply", "--server-side", "--dry-run=server", "--field-manager", "chart-test",
                 "-n", namespace, "-f", "-"],
                kubeconfig, kubectl_bin, stdin=manifest,
            )
        release = config.install(
            chart,
            "oz",
            with_worker({"warp": {"apiKeySecret": {"create": True, "value": "test-key"}}}),
            namespace=namespace,
            timeout=60,
        )
        expect(release["status"] == "deployed", f"helm install: {release['status']}")
        listed = kubectl(["get", "deployment,configmap,role,rolebinding,serviceaccount,poddisruptionbudget",
                          "-n", namespace, "-o", "name"], kubeconfig, kubectl_bin)
        for want in ["deployment.apps/oz-oz-agent-worker", "configmap/oz-oz-agent-worker-config",
                     "role.rbac.authorization.k8s.io/oz-oz-agent-worker",
                     "rolebinding.rbac.authorization.k8s.io/oz-oz-agent-worker",
                     "serviceaccount/oz-oz-agent-worker",
                     "poddisruptionbudget.policy/oz-oz-agent-worker"]:
            expect(want in listed.split(), f"{want} not installed; got {listed.split()}")
        config.uninstall("oz", timeout=60)
    finally:
        kubectl(["delete", "namespace", namespace, "--wait=false"], kubeconfig, kubectl_bin)


def command_check(args):
    check_lint_and_schema()
    renderings = [("default", check_default(args.worker_bin)), ("go-style", check_go_style(args.worker_bin))]
    renderings += check_exporters(args.worker_bin)
    apply_all(renderings, args.kubeconfig, args.kubectl)
    print(f"chart.py check: {len(renderings)} renderings validated by the API server")


def command_rbac(args):
    config = helm_python.Config(kubeconfig_path=args.kubeconfig, namespace=args.namespace)
    values = with_worker({"warp": {"apiKeySecret": {"create": True, "value": "test-key"}}})
    config.install(helm_python.Chart.load(CHART), "oz", values, namespace=args.namespace, timeout=60)
    role_name = "oz-oz-agent-worker"
    if args.without_secrets:
        role = json.loads(kubectl(["get", "role", role_name, "-n", args.namespace, "-o", "json"],
                                  args.kubeconfig, args.kubectl))
        rules = [r for r in role["rules"] if "secrets" not in r.get("resources", [])]
        expect(len(rules) == len(role["rules"]) - 1, f"no secrets rule in {role['rules']}")
        role["rules"] = rules
        kubectl(["replace", "-n", args.namespace, "-f", "-"], args.kubeconfig, args.kubectl,
                stdin=json.dumps(role))
    token = kubectl(["create", "token", role_name, "-n", args.namespace, "--duration", "1h"],
                    args.kubeconfig, args.kubectl).strip()
    admin = yaml.safe_load(pathlib.Path(args.kubeconfig).read_text())
    server = admin["clusters"][0]["cluster"]["server"]
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "c", "user": "sa", "namespace": args.namespace}}],
        "current-context": "sa",
    }
    (out / "kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    print(json.dumps({"kubeconfig": str(out / "kubeconfig"), "namespace": args.namespace}))


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check")
    rbac = sub.add_parser("rbac")
    for p in (check, rbac):
        p.add_argument("--kubeconfig", required=True)
        p.add_argument("--kubectl", required=True)
    check.add_argument("--worker-bin", required=True)
    rbac.add_argument("--namespace", required=True)
    rbac.add_argument("--out", required=True)
    rbac.add_argument("--without-secrets", action="store_true")
    args = parser.parse_args()
    {"check": command_check, "rbac": command_rbac}[args.command](args)


if __name__ == "__main__":
    main()
