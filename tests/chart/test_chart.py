"""The Helm chart, rendered by the real helm: what it installs, with which settings and which rights.

That the rendered objects are valid Kubernetes objects is the API server's call: tests/e2e/test_chart.py
dry-runs them against the real one, and tests/e2e/test_install.py installs the chart on real nodes.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import subprocess
import tempfile
from typing import Any

import pytest
import yaml
from cryptography import x509

from agent.main import AgentSettings
from attestation.main import AuthoritySettings
from controller.certificates import Certificates, Served, service_names
from controller.main import ControllerSettings
from devkit import chart
from extender.main import ExtenderSettings
from trustgate.core.labels import TRUST_RESOURCE
from trustgate.settings import Settings, _options, env_of, flag_of
from webhook.main import WebhookSettings

from ..controller.test_certificates import Store
from ..prerequisites import require_helm

NAMESPACE = "trust-ops"
ISSUER = {"issuer": {"name": "https://aias.example"}}
EVERYTHING = ISSUER | {
    "attestation": {"enabled": True},
    "agent": {"enabled": True},
    "webhook": {"auditVolume": {"enabled": True}},
}
CERT_MANAGER = EVERYTHING | {"certificates": {"mode": "cert-manager", "certManager": {"issuerRef": {"name": "ca"}}}}
PROGRAMS: dict[str, type[Settings]] = {
    "trustgate-extender": ExtenderSettings,
    "trustgate-webhook": WebhookSettings,
    "trustgate-controller": ControllerSettings,
    "trustgate-attestation": AuthoritySettings,
    "trustgate-agent": AgentSettings,
}


@pytest.fixture(autouse=True)
def _helm() -> None:
    require_helm()


@functools.cache
def _render(values: str) -> tuple[dict[str, Any], ...]:
    return tuple(chart.render(json.loads(values), namespace=NAMESPACE))


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    return list(_render(json.dumps(values, sort_keys=True)))


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def containers(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    workloads = chart.of_kind(objects, "Deployment", "DaemonSet")
    return {c["command"][0]: c for w in workloads for c in w["spec"]["template"]["spec"]["containers"]}


def arguments(container: dict[str, Any]) -> list[str]:
    return [*container["command"][1:], *container.get("args", [])]


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


def test_the_chart_passes_helm_lint_in_strict_mode() -> None:
    out = chart.helm("lint", "--strict", str(chart.CHART), "--set", "issuer.name=https://aias.example")
    assert "1 chart(s) linted, 0 chart(s) failed" in out


def test_the_chart_refuses_to_render_without_the_issuer_it_trusts() -> None:
    with pytest.raises(chart.ChartError, match=r"issuer\.name is required"):
        chart.render({}, namespace=NAMESPACE)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"certificates": {"mode": "manual"}}, "/certificates/mode': value must be one of 'self-managed'"),
        ({"webhook": {"failurePolicy": "ignore"}}, "/webhook/failurePolicy': value must be one of 'Fail', 'Ignore'"),
        ({"webhook": {"timeoutSeconds": 45}}, "/webhook/timeoutSeconds': maximum: got 45, want 30"),
        ({"webhok": {"replicas": 2}}, "additional properties 'webhok' not allowed"),
        ({"extender": {"replicas": 0}}, "/extender/replicas': minimum: got 0, want 1"),
        (
            {"certificates": {"certificateLifetimeSeconds": 30}},
            "/certificates/certificateLifetimeSeconds': minimum: got 30, want 60",
        ),
    ],
)
def test_the_chart_refuses_values_it_does_not_know_or_that_cannot_work(values: dict[str, Any], message: str) -> None:
    with pytest.raises(chart.ChartError) as refused:
        chart.render(ISSUER | values, namespace=NAMESPACE)
    assert message in str(refused.value)


@pytest.mark.parametrize("values", [EVERYTHING, CERT_MANAGER], ids=["self-managed", "cert-manager"])
def test_every_container_is_given_only_flags_and_variables_its_program_has(values: dict[str, Any]) -> None:
    found = containers(render(values))
    assert set(found) == set(PROGRAMS)
    for program, container in found.items():
        options = _options(PROGRAMS[program])
        flags = {flag_of(f.name, o) for f, o in options}
        envs = {env_of(f.name, o) for f, o in options}
        given = {a.split("=", 1)[0] for a in arguments(container) if a.startswith("--")}
        assert given <= flags, f"{program}: unknown flags {given - flags}"
        variables = {name for name in env(container) if name.startswith("TRUSTGATE_")}
        assert variables <= envs, f"{program}: unknown variables {variables - envs}"


def test_the_agent_is_told_what_it_needs_to_run() -> None:
    agent = containers(render(EVERYTHING))["trustgate-agent"]
    assert {"TRUSTGATE_NODE", "TRUSTGATE_AUTHORITY", "TRUSTGATE_CLIENT_CERT", "TRUSTGATE_BOOT_ID"} <= set(env(agent))
    assert env(agent)["TRUSTGATE_AUTHORITY"] == f"https://trustgate-attestation.{NAMESPACE}.svc:8443"


def test_the_agent_takes_a_tcti_with_commas_and_resolves_services_on_the_host_network() -> None:
    tcti = "swtpm:host=127.0.0.1,port=2321"
    values = EVERYTHING | {"agent": {"enabled": True, "tcti": tcti, "tpmDevice": "", "hostNetwork": True}}
    agent = named(render(values), "DaemonSet", "trustgate-agent")["spec"]["template"]["spec"]
    assert f"--tcti={tcti}" in agent["containers"][0]["command"]
    assert agent["hostNetwork"] is True and agent["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert "dnsPolicy" not in named(render(EVERYTHING), "DaemonSet", "trustgate-agent")["spec"]["template"]["spec"]


def test_no_trustgate_pod_is_given_service_variables_that_read_as_its_settings() -> None:
    """Service trustgate-webhook would set TRUSTGATE_WEBHOOK_PORT=tcp://...: the controller's --webhook-port."""
    for workload in chart.of_kind(render(EVERYTHING), "Deployment", "DaemonSet"):
        assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False, workload["metadata"]["name"]


def test_every_service_that_verifies_reports_trusts_the_same_issuer_and_exempts_the_same_namespaces() -> None:
    values = ISSUER | {"exemptNamespaces": ["monitoring"]}
    found = containers(render(values))
    for program in ("trustgate-extender", "trustgate-webhook", "trustgate-controller"):
        variables = env(found[program])
        assert variables["TRUSTGATE_ISSUER"] == "https://aias.example"
        assert variables["TRUSTGATE_EXEMPT_NAMESPACE"].split(",") == ["kube-system", NAMESPACE, "monitoring"]


def test_trustgates_own_pods_run_unprivileged_with_probes_and_resources() -> None:
    workloads = chart.of_kind(render(EVERYTHING), "Deployment")
    assert {w["metadata"]["name"] for w in workloads} == {
        "trustgate-extender",
        "trustgate-webhook",
        "trustgate-controller",
        "trustgate-attestation",
    }
    for workload in workloads:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["priorityClassName"] == "system-cluster-critical"
        for container in pod["containers"]:
            name = workload["metadata"]["name"]
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert container["resources"]["requests"]["memory"], name


def test_the_extender_and_webhook_keep_a_replica_through_voluntary_disruptions() -> None:
    budgets = {b["metadata"]["name"]: b for b in chart.of_kind(render(ISSUER), "PodDisruptionBudget")}
    assert set(budgets) == {"trustgate-extender", "trustgate-webhook"}
    for name, budget in budgets.items():
        workload = named(render(ISSUER), "Deployment", name)
        assert budget["spec"]["minAvailable"] == 1
        assert (
            budget["spec"]["selector"]["matchLabels"].items()
            <= workload["spec"]["template"]["metadata"]["labels"].items()
        )


def test_kube_schedulers_configuration_reaches_the_extender_service_and_hands_it_the_trust_resource() -> None:
    objects = render(ISSUER)
    configmap = named(objects, "ConfigMap", "trustgate-scheduler-config")
    (extender,) = yaml.safe_load(configmap["data"]["kube-scheduler-config.yaml"])["extenders"]
    (port,) = named(objects, "Service", "trustgate-extender")["spec"]["ports"]
    assert extender["urlPrefix"] == f"https://trustgate-extender.{NAMESPACE}.svc:{port['port']}"
    assert extender["managedResources"] == [{"name": TRUST_RESOURCE, "ignoredByScheduler": True}]
    assert extender["bindVerb"] == "bind" and extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is False


def test_the_emergency_scheduler_configuration_needs_no_extender_and_ignores_the_trust_resource() -> None:
    configmap = named(render(ISSUER), "ConfigMap", "trustgate-scheduler-config")
    config = yaml.safe_load(configmap["data"]["kube-scheduler-config-without-extender.yaml"])
    assert "extenders" not in config
    (profile,) = config["profiles"]
    args = {plugin["name"]: plugin["args"] for plugin in profile["pluginConfig"]}
    assert args["NodeResourcesFit"]["ignoredResources"] == [TRUST_RESOURCE]
    (preferred,) = args["NodeAffinity"]["addedAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["preference"]["matchExpressions"] == [
        {"key": "trustgate.dev/trusted", "operator": "In", "values": ["true"]}
    ]


def test_the_webhook_service_listens_where_the_controller_points_the_api_server() -> None:
    objects = render(ISSUER)
    (port,) = named(objects, "Service", "trustgate-webhook")["spec"]["ports"]
    default = {f.name: f.default for f, _ in _options(ControllerSettings)}["webhook_port"]
    assert port["port"] == default


def test_the_webhook_timeout_is_handed_to_the_controller_that_writes_the_configurations() -> None:
    controller = containers(render(ISSUER | {"webhook": {"timeoutSeconds": 5}}))["trustgate-controller"]
    assert "--webhook-timeout=5" in arguments(controller)
    assert "--webhook-failure-policy=Fail" in arguments(controller)


def test_the_installed_webhook_configurations_start_empty_for_the_controller_to_fill() -> None:
    objects = render(ISSUER)
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert not named(objects, kind, "trustgate").get("webhooks")


def _tls_secrets(objects: list[dict[str, Any]]) -> dict[str, dict[str, bytes]]:
    secrets = [s for s in chart.of_kind(objects, "Secret") if s["type"] == "kubernetes.io/tls"]
    return {s["metadata"]["name"]: {k: base64.b64decode(v) for k, v in s["data"].items()} for s in secrets}


def test_self_managed_certificates_cover_every_service_name_and_the_controller_keeps_them() -> None:
    objects = render(EVERYTHING)
    secrets = _tls_secrets(objects)
    services = ["trustgate-webhook", "trustgate-extender", "trustgate-controller", "trustgate-attestation"]
    assert set(secrets) == {"trustgate-ca", *(f"{s}-tls" for s in services)}
    ca = x509.load_pem_x509_certificate(secrets["trustgate-ca"]["tls.crt"])
    for service in services:
        leaf = x509.load_pem_x509_certificate(secrets[f"{service}-tls"]["tls.crt"])
        leaf.verify_directly_issued_by(ca)
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName
        )
        assert set(service_names(service, NAMESPACE)) <= set(names)
    store = Store()
    store.secrets = secrets
    served = [Served(f"{s}-tls", service_names(s, NAMESPACE)) for s in services]
    Certificates(store, served, clock=lambda: dt.datetime.now(dt.UTC)).reconcile()
    assert store.writes == 0, "the controller re-issued what the chart installed"
    assert store.config_maps["trustgate-ca"]["ca.crt"].encode() == secrets["trustgate-ca"]["tls.crt"]


def test_a_lifetime_of_minutes_installs_certificates_of_a_day_which_the_controller_shortens_at_once() -> None:
    """helm issues whole days: never a certificate that expires as it is issued."""
    objects = render(ISSUER | {"certificates": {"certificateLifetimeSeconds": 150}})
    secrets = _tls_secrets(objects)
    leaf = x509.load_pem_x509_certificate(secrets["trustgate-webhook-tls"]["tls.crt"])
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == dt.timedelta(days=1)
    store = Store()
    store.secrets = secrets
    served = [Served("trustgate-webhook-tls", service_names("trustgate-webhook", NAMESPACE))]
    Certificates(store, served, leaf_lifetime=dt.timedelta(seconds=150)).reconcile()
    renewed = x509.load_pem_x509_certificate(store.secrets["trustgate-webhook-tls"]["tls.crt"])
    assert renewed.serial_number != leaf.serial_number
    assert_openssl_verifies(store.secrets["trustgate-webhook-tls"]["tls.crt"], secrets["trustgate-ca"]["tls.crt"])
    assert renewed.not_valid_after_utc - dt.datetime.now(dt.UTC) <= dt.timedelta(seconds=150)
    assert store.secrets["trustgate-ca"] == secrets["trustgate-ca"]


def assert_openssl_verifies(chain: bytes, ca: bytes) -> None:
    """As OpenSSL clients (the agent, python) do: the leaf's authority key id must match the CA's own."""
    with tempfile.NamedTemporaryFile() as file:
        file.write(chain)
        file.flush()
        verified = subprocess.run(
            ["openssl", "verify", "-CAfile", "/dev/stdin", file.name], input=ca, capture_output=True
        )
    assert verified.returncode == 0, (verified.stdout + verified.stderr).decode()


def test_with_cert_manager_the_chart_requests_certificates_and_the_controller_touches_no_secret() -> None:
    objects = render(CERT_MANAGER)
    assert not _tls_secrets(objects)
    certificates = {c["spec"]["secretName"]: c for c in chart.of_kind(objects, "Certificate")}
    assert set(certificates) == {
        "trustgate-webhook-tls",
        "trustgate-extender-tls",
        "trustgate-controller-tls",
        "trustgate-attestation-tls",
    }
    assert all(c["spec"]["issuerRef"]["name"] == "ca" for c in certificates.values())
    controller = containers(objects)["trustgate-controller"]
    assert "--manage-certificates" not in arguments(controller)
    assert "--webhook-ca-bundle=/etc/trustgate/webhook-tls/ca.crt" in arguments(controller)
    role = named(objects, "Role", "trustgate:controller")
    assert not [r for r in role["rules"] if "secrets" in r["resources"]]


def test_the_controller_may_read_and_replace_only_trustgates_own_secrets() -> None:
    role = named(render(EVERYTHING), "Role", "trustgate:controller")
    secrets = [r for r in role["rules"] if "secrets" in r["resources"]]
    readable = {name for r in secrets if {"get", "update"} & set(r["verbs"]) for name in r["resourceNames"]}
    assert readable == {
        "trustgate-ca",
        "trustgate-webhook-tls",
        "trustgate-extender-tls",
        "trustgate-controller-tls",
        "trustgate-attestation-tls",
    }
    assert all(r.get("resourceNames") or r["verbs"] == ["create"] for r in secrets)


def test_the_authority_may_record_requests_but_not_enroll() -> None:
    role = named(render(EVERYTHING), "ClusterRole", "trustgate:attestation")
    verbs = {resource: set(rule["verbs"]) for rule in role["rules"] for resource in rule["resources"]}
    assert verbs["attestedagents"] == {"get", "create"}, "patch or update would let it write spec (the enrollment)"
    assert verbs["attestedagents/status"] == {"get", "update"}


def test_the_request_limit_fits_the_schema() -> None:
    from attestation.authority import MAX_REQUESTS_PER_NODE
    from attestation.main import MAX_REQUESTS_STORED

    (crd,) = [d for d in chart.crds() if d["metadata"]["name"] == "attestedagents.trustgate.dev"]
    (version,) = crd["spec"]["versions"]
    assert version["subresources"] == {"status": {}}, "the authority writes requests through the status only"
    requests = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["requests"]
    assert requests["maxItems"] == MAX_REQUESTS_STORED >= MAX_REQUESTS_PER_NODE


def test_the_key_broker_reads_one_secret_by_name_and_writes_no_trust_object() -> None:
    objects = render(ISSUER | {"attestation": {"enabled": True, "keyBroker": {"enabled": True}}})
    assert env(containers(objects)["trustgate-attestation"])["TRUSTGATE_IMAGE_KEYS"] == "true"
    role = named(objects, "Role", "trustgate:keybroker")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["trustgate-image-keys"], "verbs": ["get"]}
    ]
    cluster = named(objects, "ClusterRole", "trustgate:keybroker")
    writes = {
        r for rule in cluster["rules"] for r in rule["resources"] if set(rule["verbs"]) - {"get", "list", "watch"}
    }
    assert writes == {"events"}
    without = render(ISSUER | {"attestation": {"enabled": True}})
    assert not [o for o in without if o["metadata"]["name"] == "trustgate:keybroker"]
    assert "TRUSTGATE_IMAGE_KEYS" not in env(containers(without)["trustgate-attestation"])


def test_monitoring_is_off_by_default_and_when_on_installs_the_files_rules_and_dashboard_verbatim() -> None:
    assert not chart.of_kind(render(ISSUER), "PrometheusRule")
    on = {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}}}
    on["grafanaDashboard"] = {"enabled": True}
    objects = render(ISSUER | {"monitoring": on})
    rule = named(objects, "PrometheusRule", "trustgate")
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    assert rule["spec"] == yaml.safe_load((chart.CHART / "files" / "prometheus-rules.yaml").read_text())
    dashboard = named(objects, "ConfigMap", "trustgate-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["trustgate.json"]) == json.loads(
        (chart.CHART / "files" / "grafana-dashboard.json").read_text()
    )


def test_with_an_audit_volume_every_webhook_replica_appends_to_its_own_file_on_one_shared_claim() -> None:
    assert not any("--audit-log" in a for a in arguments(containers(render(ISSUER))["trustgate-webhook"]))
    objects = render(ISSUER | {"webhook": {"auditVolume": {"enabled": True, "storageClassName": "nfs"}}})
    webhook = containers(objects)["trustgate-webhook"]
    assert "--audit-log=/var/log/trustgate/$(POD_NAME).jsonl" in arguments(webhook)
    (pod_name,) = [e for e in webhook["env"] if e["name"] == "POD_NAME"]
    assert pod_name["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    claim = named(objects, "PersistentVolumeClaim", "trustgate-audit")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"] and claim["spec"]["storageClassName"] == "nfs"
    (volume,) = [
        v
        for v in named(objects, "Deployment", "trustgate-webhook")["spec"]["template"]["spec"]["volumes"]
        if v["name"] == "audit"
    ]
    assert volume["persistentVolumeClaim"]["claimName"] == "trustgate-audit"


def test_the_controller_is_handed_the_pod_trust_and_eviction_settings() -> None:
    default = arguments(containers(render(ISSUER))["trustgate-controller"])
    assert "--policy-report-max-results=1000" in default and "--eviction-rate=2" in default
    values = {"controller": {"podTrust": {"enabled": False}, "eviction": {"rate": 0.5, "pauseFraction": 0.2}}}
    changed = arguments(containers(render(ISSUER | values))["trustgate-controller"])
    assert "--no-pod-trust" in changed and "--eviction-rate=0.5" in changed
    assert "--eviction-pause-fraction=0.2" in changed
    with pytest.raises(chart.ChartError, match="pauseFraction"):
        chart.render(ISSUER | {"controller": {"eviction": {"pauseFraction": 2}}}, namespace=NAMESPACE)


def test_the_controller_may_watch_pods_write_policy_reports_and_evict_but_never_delete_pods() -> None:
    role = named(render(ISSUER), "ClusterRole", "trustgate:controller")
    rights = {(r, v) for rule in role["rules"] for r in rule["resources"] for v in rule["verbs"]}
    assert {("pods", "watch"), ("policyreports", "create"), ("pods/eviction", "create")} <= rights
    assert ("pods", "delete") not in rights
