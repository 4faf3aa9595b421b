"""What deploys chatsse (#33): the Kubernetes manifests validated against the Kubernetes schemas (strict), the
Container Apps YAML, the compose file, the Dockerfile. The image itself is built and run by
deploy/container-check.sh (CI runs it when asked: CHATSSE_CHECK_CONTAINER=1)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML, which uvicorn[standard] installs

ROOT = Path(__file__).parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
VALIDATE = Path(sys.executable).with_name("kubernetes-validate")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def validate(*paths: Path) -> subprocess.CompletedProcess[str]:
    command = [str(VALIDATE), "--strict", "--no-warn", "-k", "1.33.0", *map(str, paths)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def test_the_kubernetes_manifests_pass_the_kubernetes_schemas_strictly(tmp_path: Path) -> None:
    listed = load(KUBERNETES / "kustomization.yaml")["resources"]
    manifests = [KUBERNETES / name for name in listed] + [KUBERNETES / "secret.example.yaml"]
    checked = validate(*manifests)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("passed") == len(manifests)
    # The validator is not a rubber stamp: a misspelt field fails.
    wrong = tmp_path / "deployment.yaml"
    wrong.write_text((KUBERNETES / "deployment.yaml").read_text().replace("livenessProbe:", "livenesProbe:"))
    assert validate(wrong).returncode != 0


def test_the_deployment_probes_drains_and_runs_locked_down() -> None:
    deployment = load(KUBERNETES / "deployment.yaml")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    drain = int(next(e["value"] for e in container["env"] if e["name"] == "CHATSSE_DRAIN_SECONDS"))
    paused = re.search(r"sleep\((\d+)\)", " ".join(container["lifecycle"]["preStop"]["exec"]["command"]))
    assert paused is not None
    pause = float(paused[1])
    assert pod["terminationGracePeriodSeconds"] > drain + pause
    assert container["securityContext"]["readOnlyRootFilesystem"] is True and pod["securityContext"]["runAsNonRoot"]
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/etc/chatsse", "/tmp"}
    config = next(e["value"] for e in container["env"] if e["name"] == "CHATSSE_CONFIG")
    assert config.startswith("/etc/chatsse/") and container["envFrom"][0]["secretRef"]["name"] == "chatsse-secrets"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    hpa = load(KUBERNETES / "hpa.yaml")
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu" and hpa["spec"]["minReplicas"] >= 2
    assert load(KUBERNETES / "pdb.yaml")["spec"]["minAvailable"] == 1
    toml = load(KUBERNETES / "configmap.yaml")["data"]["chatsse.toml"]
    import tomllib

    assert tomllib.loads(toml)["caller"][0]["key_env"] == "WEB_CALLER_KEY"


def test_the_container_apps_yaml_has_both_probes_a_scale_rule_and_secrets_by_reference() -> None:
    app = load(ROOT / "deploy" / "containerapps" / "chatsse.yaml")
    template = app["properties"]["template"]
    [container] = template["containers"]
    probes = {probe["type"]: probe["httpGet"]["path"] for probe in container["probes"]}
    assert probes["Liveness"] == "/health/live" and probes["Readiness"] == "/health/ready"
    assert template["scale"]["rules"] and template["terminationGracePeriodSeconds"] > 25
    secrets = {s["name"] for s in app["properties"]["configuration"]["secrets"]}
    referenced = {e["secretRef"] for e in container["env"] if "secretRef" in e}
    assert (
        referenced
        and referenced <= secrets
        and all("value" not in s for s in app["properties"]["configuration"]["secrets"])
    )
    assert app["properties"]["configuration"]["ingress"]["targetPort"] == 8000


def test_the_compose_file_runs_two_instances_on_redis_behind_nginx() -> None:
    compose = load(ROOT / "docker-compose.yml")
    services = compose["services"]
    assert set(services) == {"redis", "chatsse-1", "chatsse-2", "nginx"}
    for name in ("chatsse-1", "chatsse-2"):
        assert services[name]["environment"]["CHATSSE_REDIS_URL"] == "redis://redis:6379/0"
        assert services[name]["read_only"] is True and services[name]["build"] == "."
    mounted = services["nginx"]["volumes"][0].split(":")[0]
    nginx = (ROOT / mounted).read_text()
    assert "proxy_buffering off" in nginx and "chatsse-1:8000" in nginx and "chatsse-2:8000" in nginx


def test_the_compose_nginx_configuration_is_valid_nginx(tmp_path: Path) -> None:
    conf = (ROOT / "deploy" / "compose" / "nginx.conf").read_text()
    # The compose network's names resolved here as loopback, and a writable pid and log place: nginx -t checks it.
    conf = conf.replace("chatsse-1:8000", "127.0.0.1:8001").replace("chatsse-2:8000", "127.0.0.1:8002")
    conf = f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\n" + conf
    (tmp_path / "nginx.conf").write_text(conf)
    checked = subprocess.run(
        ["/usr/sbin/nginx", "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr


def test_the_dockerfile_installs_the_lock_runs_as_a_user_and_checks_liveness() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "--require-hashes -r /src/requirements.txt" in dockerfile
    final = dockerfile.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001", final, re.M) and "/health/live" in final
    assert "apt-get" not in dockerfile and "gcc" not in dockerfile  # no build tools anywhere
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ignored[ignored.index("*") + 1 :][:4] == ["!requirements.txt", "!pyproject.toml", "!README.md", "!chatsse/"]
