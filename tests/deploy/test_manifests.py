"""compose.yaml, the Dockerfiles, Prometheus and the Kubernetes manifests agree with the code.

No Docker engine or cluster is needed: each check rebuilds what a container would execute (the
image's ENTRYPOINT/CMD as the file overrides them) and hands it to the real parsers, namely
`dataplane.options.parse_options`, the control plane's CLI parser, `examples.build.parse_args`,
the health probe's flags, `controlplane.config.Settings.from_env` and the data plane's
monitoring-config reader, so a renamed flag, env var, port or path fails here first.
"""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from flask.testing import FlaskClient

from controlplane.__main__ import build_parser as controlplane_parser
from controlplane.config import Settings, variables
from dataplane import metrics
from dataplane.options import ServerOptions, parse_options
from examples.build import parse_args as parse_build_args
from scripts import grpc_health_probe, images

REPO = Path(__file__).resolve().parents[2]
K8S_DIR = REPO / "deploy" / "kubernetes"
GRPC_PORT = ServerOptions().port  # 8500: tensorflow_model_server's default
REST_PORT = 8501  # TF Serving's conventional REST port (the flag's own default, 0, turns it off)
CONTROLPLANE_PORT = 5000
MONITORING_CONFIG = "/etc/modelplane/monitoring.config"
MODELS_DIR = "/models"
WORKLOAD_KINDS = ("Deployment", "StatefulSet")
FRONT_DOOR = "nginx"  # compose's only image of ours that runs no Python (deploy/nginx/)
NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"


# -- loading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Dockerfile:
    """The instructions of one Dockerfile that the checks need."""

    path: Path
    base: str
    entrypoint: list[str]
    cmd: list[str]
    copy_sources: list[str]
    runs: list[str]
    args: list[str]


def logical_lines(text: str) -> Iterator[str]:
    """Dockerfile lines with `\\` continuations joined and comments dropped."""
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        yield pending + line
        pending = ""


@cache
def read_dockerfile(relative: str) -> Dockerfile:
    path = REPO / relative
    found: dict[str, list[str]] = {}
    for line in logical_lines(path.read_text()):
        keyword, _, rest = line.partition(" ")
        found.setdefault(keyword.upper(), []).append(rest.strip())
    return Dockerfile(
        path=path,
        base=found["FROM"][-1],
        entrypoint=json.loads(found["ENTRYPOINT"][-1]),
        cmd=json.loads(found["CMD"][-1]),
        copy_sources=[  # from the build context, not from an earlier stage
            src
            for copy in found["COPY"]
            if not copy.startswith("--from=")
            for src in copy.split()[:-1]
        ],
        runs=found["RUN"],
        args=found.get("ARG", []),
    )


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


@cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S_DIR / "kustomization.yaml").read_text())


@cache
def k8s_documents() -> tuple[dict[str, Any], ...]:
    """Every document of every manifest the kustomization applies."""
    return tuple(
        doc
        for name in kustomization()["resources"]
        for doc in yaml.safe_load_all((K8S_DIR / name).read_text())
        if doc
    )


def k8s(kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in k8s_documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected exactly one {kind}/{name}, found {len(matches)}"
    return matches[0]


def workloads() -> list[dict[str, Any]]:
    return [d for d in k8s_documents() if d["kind"] in WORKLOAD_KINDS]


def pod_containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = workload["spec"]["template"]["spec"]
    return [*spec.get("initContainers", []), *spec["containers"]]


@cache
def our_images() -> dict[str, str]:
    """Image name (no tag) -> Dockerfile path, from the services that build a Python image."""
    return {
        svc["image"].split(":")[0]: svc["build"]["dockerfile"]
        for name, svc in services().items()
        if "build" in svc and name != FRONT_DOOR
    }


def image_name(image: str) -> str:
    return image.split(":")[0]


# -- what each container runs -----------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    """One container of ours: where it is declared, its spec, and the argv it executes."""

    where: str
    spec: dict[str, Any]
    argv: list[str]

    @property
    def program(self) -> str:
        """The module after `python -m` (every image of ours runs one)."""
        assert self.argv[:2] == ["python", "-m"], f"{self.where}: runs {self.argv}"
        return self.argv[2]


def container_argv(spec: dict[str, Any], entrypoint_key: str, command_key: str) -> list[str]:
    """What the engine runs; overriding the entrypoint drops the image's CMD (both engines)."""
    image = read_dockerfile(our_images()[image_name(spec["image"])])
    if entrypoint_key in spec:
        return [*spec[entrypoint_key], *spec.get(command_key, [])]
    return [*image.entrypoint, *spec.get(command_key, image.cmd)]


@cache
def processes() -> tuple[Process, ...]:
    found = [
        Process(f"compose service {name}", svc, container_argv(svc, "entrypoint", "command"))
        for name, svc in services().items()
        if image_name(svc["image"]) in our_images()
    ]
    for workload in workloads():
        for container in pod_containers(workload):
            if image_name(container["image"]) in our_images():
                where = f"{workload['kind']}/{workload['metadata']['name']} {container['name']}"
                argv = container_argv(container, "command", "args")
                found.append(Process(where, container, argv))
    return tuple(found)


def running(program: str, where_prefix: str = "") -> list[Process]:
    return [p for p in processes() if p.program == program and p.where.startswith(where_prefix)]


def compose_dataplanes() -> list[str]:
    """Names of the compose services that run a data-plane server."""
    return [p.where.split()[-1] for p in running("dataplane", "compose")]


@cache
def env_names_read_by_controlplane() -> frozenset[str]:
    """Every variable the control plane's settings read (config.py is its only env reader)."""
    return frozenset(variables(Settings))


def k8s_container_env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment: ConfigMap keys via envFrom, then `env` (values or refs)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(k8s("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        value = k8s("Secret", ref["name"])["stringData"][ref["key"]] if ref else var["value"]
        env[var["name"]] = value
    return env


@pytest.fixture(scope="module")
def controlplane_client(tmp_path_factory: pytest.TempPathFactory) -> FlaskClient:
    """The real app on a freshly migrated SQLite file (what `db upgrade` leaves), no worker."""
    from controlplane import migrate
    from controlplane.app import create_app  # imports TensorFlow's protos: seconds
    from controlplane.db import Database

    url = f"sqlite:///{tmp_path_factory.mktemp('controlplane') / 'probe.db'}"
    database = Database(url)
    migrate.upgrade(database)
    database.dispose()
    return create_app(Settings(database_url=url, run_fleet=False)).test_client()


# -- the files themselves ---------------------------------------------------------------------


def test_kustomization_applies_every_manifest_in_the_directory() -> None:
    on_disk = {p.name for p in K8S_DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(on_disk)
    assert kustomization()["namespace"] == "modelplane"
    assert k8s("Namespace", "modelplane")["apiVersion"] == "v1"


def test_every_workload_selects_its_own_pods() -> None:
    assert {(w["kind"], w["metadata"]["name"]) for w in workloads()} == {
        ("Deployment", "controlplane"),
        ("Deployment", "dataplane"),
        ("StatefulSet", "postgres"),
    }
    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_container_of_ours_runs_a_module_of_this_repo() -> None:
    programs = sorted(p.program for p in processes())
    assert programs == sorted(["dataplane"] * 3 + ["controlplane"] * 4 + ["examples.build"] * 2), [
        (p.where, p.argv) for p in processes()
    ]
    for process in processes():
        assert importlib.util.find_spec(process.program) is not None, process.where


# -- Dockerfiles ------------------------------------------------------------------------------


@pytest.mark.parametrize("dockerfile", sorted(set(our_images().values())))
def test_dockerfile_builds_offline_from_the_repository(dockerfile: str) -> None:
    image = read_dockerfile(dockerfile)
    built = next(spec for spec in images.IMAGES if spec.dockerfile == dockerfile)
    assert image.base == "${BASE}"
    assert "BASE=modelplane/base:local" in image.args
    wheelhouse = f"{images.wheelhouse_dir(built).relative_to(REPO)}/"
    requirements = " ".join(f"-r /build/{Path(path).name}" for path in built.wheels)
    install = (
        "python3 -m venv /opt/venv && /opt/venv/bin/pip install --no-cache-dir --no-index "
        f"--find-links /build/wheels {requirements} -c /build/constraints.txt"
    )
    assert any(" ".join(run.split()).startswith(install) for run in image.runs), image.runs
    assert {wheelhouse, "constraints.txt", *built.wheels} <= set(image.copy_sources)
    assert "modelplane/" in image.copy_sources  # the protos `make install` generates
    allowed = dockerignore_allowlist(image.path)
    for source in image.copy_sources:
        if source != wheelhouse:  # `make images` fills it
            assert (REPO / source).exists(), f"{dockerfile}: COPY {source} does not exist"
        assert source.rstrip("/") in allowed, f"{dockerfile}: {source} is .dockerignored"


def test_dataplane_image_carries_the_native_transport_the_makefile_builds() -> None:
    image = read_dockerfile("deploy/docker/Dockerfile.dataplane")
    assert "dataplane/" in image.copy_sources
    ignored = Path(f"{image.path}.dockerignore").read_text().splitlines()
    assert not any("_native" in line for line in ignored)
    makefile = (REPO / "Makefile").read_text()
    assert "NATIVE := dataplane/transport/_native.abi3.so" in makefile
    assert re.search(r"^install: .*\$\(NATIVE\)", makefile, re.MULTILINE)
    assert re.search(r"^images: install$", makefile, re.MULTILINE)


def dockerignore_allowlist(dockerfile: Path) -> set[str]:
    """The `!path` lines of the Dockerfile's own ignore file, which starts by ignoring `*`."""
    lines = Path(f"{dockerfile}.dockerignore").read_text().splitlines()
    assert "*" in lines
    return {line[1:].rstrip("/") for line in lines if line.startswith("!")}


def test_each_image_runs_the_program_it_is_named_after() -> None:
    for image, dockerfile in our_images().items():
        entrypoint = read_dockerfile(dockerfile).entrypoint
        assert entrypoint == ["python", "-m", image.removeprefix("modelplane-")]


# -- data planes ------------------------------------------------------------------------------


def test_dataplane_flags_parse_with_the_standard_ports() -> None:
    dataplanes = running("dataplane")
    assert len(dataplanes) == 3  # two in compose, one Deployment
    for process in dataplanes:
        options = parse_options(process.argv[3:])
        assert (options.port, options.rest_api_port) == (GRPC_PORT, REST_PORT), process.where
        assert options.monitoring_config_file == MONITORING_CONFIG, process.where
    assert GRPC_PORT == 8500


def test_compose_has_two_dataplanes_sharing_the_models_volume() -> None:
    assert compose_dataplanes() == ["dataplane-1", "dataplane-2"]
    build = running("examples.build", "compose")[0]
    out = parse_build_args(build.argv[3:]).out
    assert f"models:{out}" in build.spec["volumes"]
    for name in compose_dataplanes():
        assert f"models:{out}:ro" in services()[name]["volumes"]
        assert services()[name]["depends_on"]["models"] == {
            "condition": "service_completed_successfully"
        }
    assert "models" in compose()["volumes"]


def test_kubernetes_dataplanes_get_the_models_the_init_container_builds() -> None:
    build = running("examples.build", "Deployment/dataplane")[0]
    out = parse_build_args(build.argv[3:]).out
    dataplane = running("dataplane", "Deployment/dataplane")[0].spec
    for container in (build.spec, dataplane):
        assert {"name": "models", "mountPath": out} in [
            {k: v for k, v in m.items() if k != "readOnly"} for m in container["volumeMounts"]
        ]
    assert out == MODELS_DIR


def test_monitoring_config_enables_the_path_prometheus_scrapes(tmp_path: Path) -> None:
    compose_file = REPO / "deploy" / "dataplane" / "monitoring.config"
    k8s_file = tmp_path / "monitoring.config"
    k8s_file.write_text(k8s("ConfigMap", "dataplane-monitoring")["data"]["monitoring.config"])
    paths = {
        metrics.prometheus_path(metrics.read_monitoring_config(str(f)))
        for f in (compose_file, k8s_file)
    }
    assert paths == {metrics.DEFAULT_PATH}
    prometheus = yaml.safe_load((REPO / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["metrics_path"] == metrics.DEFAULT_PATH
    assert job["static_configs"][0]["targets"] == [f"{n}:{REST_PORT}" for n in compose_dataplanes()]
    annotations = k8s("Deployment", "dataplane")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == metrics.DEFAULT_PATH
    assert annotations["prometheus.io/port"] == str(REST_PORT)


def test_monitoring_config_is_mounted_where_the_flag_points() -> None:
    for name in compose_dataplanes():
        assert (
            f"./deploy/dataplane/monitoring.config:{MONITORING_CONFIG}:ro"
            in (services()[name]["volumes"])
        )
    pod = k8s("Deployment", "dataplane")["spec"]["template"]["spec"]
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "monitoring")
    volume = next(v for v in pod["volumes"] if v["name"] == "monitoring")
    assert f"{mount['mountPath']}/monitoring.config" == MONITORING_CONFIG
    assert "monitoring.config" in k8s("ConfigMap", volume["configMap"]["name"])["data"]


def probe_port(argv: list[str]) -> tuple[int, bool]:
    """(gRPC port, accepts NOT_SERVING) of a scripts/grpc_health_probe.py command line."""
    assert argv[:2] == ["python", "scripts/grpc_health_probe.py"], argv
    args = grpc_health_probe.parse_args(argv[2:])
    return int(args.addr.rsplit(":", 1)[1]), args.allow_not_serving


def test_compose_healthchecks_ask_the_grpc_health_service() -> None:
    for name in compose_dataplanes():
        test = services()[name]["healthcheck"]["test"]
        assert test[0] == "CMD"
        assert probe_port(test[1:]) == (GRPC_PORT, False)  # healthy = serving a model


def test_kubernetes_probes_ask_the_grpc_health_service() -> None:
    container = running("dataplane", "Deployment/dataplane")[0].spec
    assert container["readinessProbe"]["grpc"] == {"port": GRPC_PORT, "service": ""}
    for probe in ("startupProbe", "livenessProbe"):
        argv = container[probe]["exec"]["command"]
        assert probe_port(argv) == (GRPC_PORT, True), probe  # an empty plane is alive
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": GRPC_PORT, "http": REST_PORT}
    grace = k8s("Deployment", "dataplane")["spec"]["template"]["spec"]
    assert grace["terminationGracePeriodSeconds"] > ServerOptions().grace_period_seconds


def nginx_upstreams() -> dict[str, list[str]]:
    """Upstream name -> its `server` addresses, from deploy/nginx/nginx.conf."""
    blocks = re.findall(r"upstream (\w+) \{(.*?)\}", NGINX_CONF.read_text(), re.S)
    return {name: re.findall(r"^\s*server (\S+)", body, re.M) for name, body in blocks}


def test_nginx_balances_both_ports_of_every_dataplane() -> None:
    planes = compose_dataplanes()
    assert nginx_upstreams() == {
        "dataplanes_grpc": [f"{n}:{GRPC_PORT}" for n in planes],
        "dataplanes_rest": [f"{n}:{REST_PORT}" for n in planes],
    }
    conf = NGINX_CONF.read_text()
    assert f"listen {GRPC_PORT} http2;" in conf and "grpc_pass grpc://dataplanes_grpc;" in conf
    assert f"listen {REST_PORT};" in conf and "proxy_pass http://dataplanes_rest;" in conf
    for retry in ("grpc_next_upstream", "proxy_next_upstream"):  # a refused plane is skipped
        assert f"{retry} error timeout non_idempotent;" in conf, retry


def test_compose_publishes_only_the_front_door_and_its_mounted_config() -> None:
    nginx = services()[FRONT_DOOR]
    assert {int(p.rsplit(":", 1)[1]) for p in nginx["ports"]} == {GRPC_PORT, REST_PORT}
    assert nginx["volumes"] == ["./deploy/nginx/nginx.conf:/etc/nginx/nginx.conf:ro"]
    assert set(nginx["depends_on"]) == set(compose_dataplanes())
    for name in compose_dataplanes():
        assert "ports" not in services()[name], name


def test_compose_networks_let_a_dataplane_be_cut_off_the_controlplane_alone() -> None:
    """`fleet` is the only link between the control plane and the data planes, and nginx is
    not on it: disconnecting a plane from `fleet` stops its config pushes, not its traffic."""
    nets = {name: set(svc.get("networks", [])) for name, svc in services().items()}
    for name in compose_dataplanes():
        assert nets[name] & nets["controlplane"] == {"fleet"}, name
        assert nets[name] & nets[FRONT_DOOR] == {"serving"}, name
    assert {n for n, on in nets.items() if "fleet" in on} == {"controlplane", *compose_dataplanes()}
    assert set(compose()["networks"]) == set().union(*nets.values())


# -- control plane ----------------------------------------------------------------------------


def test_controlplane_commands_parse_with_its_cli() -> None:
    commands = {}
    for process in running("controlplane"):
        args = controlplane_parser().parse_args(process.argv[3:])
        commands[process.where] = process.argv[3]
        if process.argv[3] == "serve":
            assert (args.host, args.port) == ("0.0.0.0", CONTROLPLANE_PORT), process.where
    assert commands == {
        "compose service migrate": "db",
        "compose service controlplane": "serve",
        "Deployment/controlplane migrate": "db",
        "Deployment/controlplane controlplane": "serve",
    }
    assert all(
        p.argv[3:] == ["db", "upgrade"] for p in running("controlplane") if "migrate" in p.where
    )


def test_compose_migrates_before_the_controlplane_starts() -> None:
    assert services()["controlplane"]["depends_on"] == {
        "migrate": {"condition": "service_completed_successfully"}
    }
    assert services()["migrate"]["depends_on"] == {"postgres": {"condition": "service_healthy"}}


def test_controlplane_env_uses_only_names_the_code_reads() -> None:
    read = env_names_read_by_controlplane()
    assert {"DATABASE_URL", "MODELPLANE_DATAPLANES", "MODELPLANE_DATAPLANES_DNS"} <= read
    compose_envs = [p.spec["environment"] for p in running("controlplane", "compose")]
    k8s_envs = [k8s_container_env(p.spec) for p in running("controlplane", "Deployment")]
    for env in [*compose_envs, *k8s_envs]:
        assert set(env) <= read, set(env) - read
        assert env["DATABASE_URL"].startswith("postgresql://")


def test_compose_controlplane_is_given_both_dataplanes() -> None:
    env = services()["controlplane"]["environment"]
    settings = Settings.from_env(env)
    assert settings.dataplanes == tuple(f"{n}:{GRPC_PORT}" for n in compose_dataplanes())
    assert settings.database_url.endswith("@postgres:5432/modelplane")


def test_kubernetes_controlplane_discovers_every_dataplane_pod_by_dns() -> None:
    container = running("controlplane", "Deployment/controlplane controlplane")[0].spec
    settings = Settings.from_env(k8s_container_env(container))
    host, _, port = settings.dataplanes_dns.rpartition(":")
    headless = k8s("Service", host)
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True  # empty planes are not ready
    pod_labels = k8s("Deployment", "dataplane")["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= pod_labels.items()
    assert [p["port"] for p in headless["spec"]["ports"]] == [int(port)] == [GRPC_PORT]
    assert settings.dns_refresh_s == 10.0


def test_controlplane_health_endpoints_answer(controlplane_client: FlaskClient) -> None:
    container = running("controlplane", "Deployment/controlplane controlplane")[0].spec
    path = container["readinessProbe"]["httpGet"]["path"]
    response = controlplane_client.get(path)
    assert (response.status_code, response.get_json()) == (200, {"status": "ok", "database": True})
    check = services()["controlplane"]["healthcheck"]["test"][-1]
    assert f"'http://localhost:{CONTROLPLANE_PORT}{path}'" in check
    assert services()["controlplane"]["ports"] == [
        f"127.0.0.1:${{CONTROLPLANE_PORT:-{CONTROLPLANE_PORT}}}:{CONTROLPLANE_PORT}"
    ]


# -- Kubernetes wiring ------------------------------------------------------------------------


def test_every_service_targets_ports_its_pods_expose() -> None:
    for service in (d for d in k8s_documents() if d["kind"] == "Service"):
        selector = service["spec"]["selector"]
        pods = [
            w
            for w in workloads()
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(pods) == 1, service["metadata"]["name"]
        exposed = {
            p["name"]: p["containerPort"]
            for c in pod_containers(pods[0])
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert exposed[port["targetPort"]] == port["port"], service["metadata"]["name"]


def test_every_secret_and_configmap_reference_resolves() -> None:
    for workload in workloads():
        for container in pod_containers(workload):
            k8s_container_env(container)  # raises on a missing Secret, key or ConfigMap
            mounts = {m["name"] for m in container.get("volumeMounts", [])}
            declared = {v["name"] for v in workload["spec"]["template"]["spec"].get("volumes", [])}
            claims = {
                c["metadata"]["name"] for c in workload["spec"].get("volumeClaimTemplates", [])
            }
            assert mounts <= declared | claims, container["name"]


def test_kubernetes_runs_the_images_compose_builds() -> None:
    images = {
        c["image"]
        for w in workloads()
        for c in pod_containers(w)
        if image_name(c["image"]) in our_images()
    }
    built = {svc["image"] for name, svc in services().items() if "build" in svc}
    assert images == built - {services()[FRONT_DOOR]["image"]}  # Kubernetes has its Ingress
    assert {i["name"] for i in kustomization()["images"]} == set(our_images())
    assert set(our_images()) == {"modelplane-dataplane", "modelplane-controlplane"}


def test_compose_bind_mounts_and_dependencies_exist() -> None:
    for name, svc in services().items():
        for volume in svc.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (REPO / source).is_file(), f"{name}: {source}"
            else:
                assert source in compose()["volumes"], f"{name}: {source}"
        assert set(svc.get("depends_on", [])) <= set(services()), name


# -- secrets: required, and one data-plane token shared by both sides -------------------------


def test_compose_requires_every_secret_and_ships_no_default():
    text = (REPO / "compose.yaml").read_text()
    for name in ("POSTGRES_PASSWORD", "MODELPLANE_SECRET_KEY"):
        assert f"${{{name}:-" not in text and f"${{{name}}}" not in text, name
        assert f"${{{name}:?" in text, name
    env = services()["controlplane"]["environment"]
    assert env["MODELPLANE_SECRET_KEY"].startswith("${MODELPLANE_SECRET_KEY:?")
    assert "${POSTGRES_PASSWORD:?" in env["DATABASE_URL"]
    assert services()["postgres"]["environment"]["POSTGRES_PASSWORD"].startswith(
        "${POSTGRES_PASSWORD:?"
    )
    # a file named in .env: docker-compose 1.29 (Debian's) knows no `environment:` secrets
    token = compose()["secrets"]["dataplane_token"]
    assert token == {"file": token["file"]}
    assert token["file"].startswith("${MODELPLANE_DATAPLANE_TOKEN_FILE:?")


def test_compose_dataplanes_require_the_token_the_controlplane_sends():
    token_file = "/run/secrets/dataplane_token"
    control = services()["controlplane"]
    assert control["environment"]["MODELPLANE_DATAPLANE_TOKEN_FILE"] == token_file
    assert control["secrets"] == ["dataplane_token"]
    for process in running("dataplane", "compose"):
        assert f"--admin_token_file={token_file}" in process.argv, process.where
        assert process.spec["secrets"] == ["dataplane_token"], process.where


def secret_file(workload: dict[str, Any], container: dict[str, Any], path: str) -> tuple[str, str]:
    """(Secret name, key) of the file `path` as `container` sees it through a secret volume."""
    volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        secret = volumes[mount["name"]].get("secret")
        if secret is None:
            continue
        for item in secret["items"]:
            if f"{mount['mountPath']}/{item['path']}" == path:
                return secret["secretName"], item["key"]
    raise AssertionError(f"{container['name']}: nothing mounts {path}")


def test_kubernetes_dataplanes_require_the_token_the_controlplane_sends():
    control = k8s("Deployment", "controlplane")
    [container] = control["spec"]["template"]["spec"]["containers"]
    path = k8s_container_env(container)["MODELPLANE_DATAPLANE_TOKEN_FILE"]
    sent = secret_file(control, container, path)
    data = k8s("Deployment", "dataplane")
    [plane] = data["spec"]["template"]["spec"]["containers"]
    [flag] = [a for a in plane["args"] if a.startswith("--admin_token_file=")]
    assert (
        secret_file(data, plane, flag.split("=", 1)[1])
        == sent
        == ("modelplane-secrets", "DATAPLANE_TOKEN")
    )


def test_kubernetes_placeholder_secrets_keep_the_controlplane_from_starting():
    from controlplane import startup_checks

    container = running("controlplane", "Deployment/controlplane controlplane")[0].spec
    settings = Settings.from_env(k8s_container_env(container))
    with pytest.raises(startup_checks.UnsafeSettings) as refused:
        startup_checks.checked(settings)
    assert "MODELPLANE_SECRET_KEY is a placeholder" in str(refused.value)
    assert "DATABASE_URL uses a placeholder password" in str(refused.value)
    token = k8s("Secret", "modelplane-secrets")["stringData"]["DATAPLANE_TOKEN"]
    assert startup_checks.dataplane_token_problem(token) is not None
