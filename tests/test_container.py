"""The container image (Dockerfile) and Nextflow's docker profile, run for real.

Builds the Debian-mirror base (``scripts/make_base_image.sh``) and the image
(``scripts/build_container.sh``, what ``make container`` runs) with a real Docker engine,
runs ``bonemet --version`` in it, and runs ``nextflow run . -profile test,docker``, whose
published ``bonemet.h5ad`` must have the cells, clusters and labels of the local
``-profile test`` run (the ``test_run`` fixture of conftest.py, shared with
tests/test_nextflow.py).

When no Docker daemon answers, the tests start one as root: ``dockerd`` with its data and
exec roots in a temporary folder and no bridge network; at the end it is stopped by its PID
and the folder is removed with everything else it created. Where no engine can start (no
docker client, no dockerd, not root, or the daemon fails), the tests are skipped with the
reason. The base image's root file system is cached in ``$BONEMET_CONTAINER_CACHE``
(default ``~/.cache/bonemet``), so a machine runs debootstrap once.

Selected with ``-m container``; ``make test`` runs them too.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_nextflow import NEXTFLOW, WHY_NOT, _env, _fail_msg, _latest_trace, nextflow

ROOT = Path(__file__).resolve().parents[1]
VERSION = next(
    line.split('"')[1]
    for line in (ROOT / "pyproject.toml").read_text().splitlines()
    if line.startswith("version = ")
)
IMAGE = f"bonemet:{VERSION}"  # the default of `make container` and of params.container
BASE_IMAGE = "bonemet-base:bookworm"
CACHE = Path(os.environ.get("BONEMET_CONTAINER_CACHE", Path.home() / ".cache" / "bonemet"))
# what a dockerd may create outside its data and exec roots; removed when the test created it
DOCKERD_LEFTOVERS = ("/etc/docker", "/run/docker", "/run/containerd")

pytestmark = [
    pytest.mark.container,
    pytest.mark.skipif(NEXTFLOW is None, reason=f"Nextflow unavailable: {WHY_NOT}"),
]


def _run(cmd: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        cmd, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


def _docker_answers(env: dict[str, str]) -> bool:
    try:
        return _run(["docker", "info"], env, timeout=30).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the daemon's PID, SIGKILL after 60 s."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _unmount_below(folder: Path) -> None:
    """Unmount what a killed daemon left mounted under ``folder`` (deepest first)."""
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for m in sorted((m for m in mounts if m.startswith(f"{folder}/")), key=len, reverse=True):
        subprocess.run(["umount", "-l", m], check=False, capture_output=True)


@pytest.fixture(scope="module")
def engine():
    """Environment for ``docker`` commands: the running daemon, or one started here."""
    env = dict(os.environ)
    if shutil.which("docker") is None:
        pytest.skip("no container engine: no docker client on PATH (apt-get install docker.io)")
    if _docker_answers(env):
        yield {"env": env, "started": False, "network": []}
        return
    if os.geteuid() != 0 or shutil.which("dockerd") is None:
        pytest.skip(
            "no container engine: no Docker daemon answers, and one can be started here only "
            "as root with dockerd installed (apt-get install docker.io)"
        )
    existed = {p for p in DOCKERD_LEFTOVERS if os.path.lexists(p)}
    root = Path(tempfile.mkdtemp(prefix="bonemet-dockerd-"))
    sock = root / "docker.sock"
    log_path = root / "dockerd.log"
    cmd = [
        "dockerd",
        "--data-root", str(root / "data"),
        "--exec-root", str(root / "exec"),
        "--pidfile", str(root / "dockerd.pid"),
        "--host", f"unix://{sock}",
        "--iptables=false",
        "--bridge=none",
    ]  # fmt: skip
    with log_path.open("w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    env["DOCKER_HOST"] = f"unix://{sock}"
    try:
        deadline = time.monotonic() + 90
        while not (sock.exists() and _docker_answers(env)):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                pytest.skip(f"no container engine: dockerd did not start: {' | '.join(tail)}")
            time.sleep(1)
        # no bridge network: builds reach PyPI through the host's network
        yield {"env": env, "started": True, "network": ["--network", "host"]}
    finally:
        _stop(proc)
        _unmount_below(root)
        shutil.rmtree(root, ignore_errors=True)
        for p in DOCKERD_LEFTOVERS:
            if p not in existed:
                shutil.rmtree(p, ignore_errors=True)
        assert not root.exists(), f"could not remove the daemon's folder {root}"


@pytest.fixture(scope="module")
def image(engine, tmp_path_factory):
    """The base from the Debian mirror and bonemet's image on it, built as ``make container``."""
    env = dict(engine["env"], ENGINE="docker")
    timings = {}
    t0 = time.perf_counter()
    r = _run(
        ["bash", "scripts/make_base_image.sh"],
        dict(env, IMAGE=BASE_IMAGE, CACHE=str(CACHE / "base-bookworm.tar")),
        timeout=1200,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    timings["base_s"] = time.perf_counter() - t0
    probe = _run(["docker", "run", "--rm", "--network", "none", BASE_IMAGE, "true"], env, 300)
    if probe.returncode != 0:
        pytest.skip(
            "no container engine: the Docker daemon runs but cannot start a container: "
            + (probe.stderr.strip().splitlines() or ["(no message)"])[-1]
        )
    # the image gets the versions this environment was tested with
    freeze = _run([sys.executable, "-m", "pip", "freeze"], env, timeout=120)
    assert freeze.returncode == 0, freeze.stderr
    pins = [
        line
        for line in freeze.stdout.splitlines()
        if "==" in line and not line.lower().startswith(("bonemet==", "-e"))
    ]
    constraints = tmp_path_factory.mktemp("container") / "constraints.txt"
    constraints.write_text("\n".join(pins) + "\n")
    t0 = time.perf_counter()
    r = _run(
        ["bash", "scripts/build_container.sh"],
        dict(
            env,
            BASE=BASE_IMAGE,
            CONSTRAINTS=str(constraints),
            BUILD_ARGS=" ".join(engine["network"]),
        ),
        timeout=2400,
    )
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    timings["build_s"] = time.perf_counter() - t0
    size = _run(["docker", "image", "inspect", "--format", "{{.Size}}", IMAGE], env, timeout=60)
    assert size.returncode == 0, size.stderr
    timings["size_gb"] = int(size.stdout.strip()) / 1e9
    print(f"container image {IMAGE}: {timings}")
    return {"tag": IMAGE, "env": env, "timings": timings}


@pytest.mark.timeout(3600)
def test_image_runs_bonemet_as_any_user(image):
    env = image["env"]
    # as Nextflow runs it: an arbitrary uid:gid without a passwd entry or a home folder
    r = _run(
        [
            "docker", "run", "--rm", "--network", "none", "-u", "4321:4321", image["tag"],
            "bash", "-c",
            "bonemet --version && ps -o pid= -p 1 >/dev/null && echo ps-ok"
            " && ! python -c 'import pytest' 2>/dev/null && echo no-test-extras"
            " && test ! -e /run/secrets/ca && test ! -e /src && echo no-secrets",
        ],
        env,
        timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.split()
    assert lines[:2] == ["bonemet", VERSION], r.stdout
    assert {"ps-ok", "no-test-extras", "no-secrets"} <= set(lines), r.stdout
    # the proxy's CA bundle was a build secret: no layer of the image holds it
    history = _run(["docker", "history", "--no-trunc", image["tag"]], env, timeout=60)
    assert "BEGIN CERTIFICATE" not in history.stdout


@pytest.mark.timeout(3600)
def test_docker_profile_publishes_what_the_local_run_does(image, test_run, tmp_path):
    """``-profile test,docker``: every task in the local image; same result as ``-profile test``."""
    import anndata as ad

    assert test_run["result"].returncode == 0, _fail_msg(test_run["result"], test_run["launch"])
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = nextflow(
        tmp_path,
        "-profile", "test,docker",
        "--outdir", str(out),
        "--container_options", "--network none",
        extra_env={k: v for k, v in image["env"].items() if k == "DOCKER_HOST"},
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    assert r.returncode == 0, _fail_msg(r, tmp_path)
    print(
        f"-profile test,docker: {seconds:.0f} s (local -profile test: {test_run['seconds']:.0f} s)"
    )
    rows = _latest_trace(out)
    assert rows and {row["status"] for row in rows} == {"COMPLETED"}, rows
    # each task ran in the image, as the invoking user, never pulling, with the extra options
    for row in rows:
        wrapper = (Path(row["workdir"]) / ".command.run").read_text()
        assert "docker run" in wrapper and image["tag"] in wrapper, row["process"]
        for option in ("-u $(id -u):$(id -g)", "--pull never", "--network none"):
            assert option in wrapper, (row["process"], option)
    nf = ad.read_h5ad(out / "bonemet.h5ad")
    lo = ad.read_h5ad(test_run["out"] / "bonemet.h5ad")
    assert list(nf.obs_names) == list(lo.obs_names)
    assert list(nf.var_names) == list(lo.var_names)
    assert (nf.obs["leiden"].astype(str).values == lo.obs["leiden"].astype(str).values).all()
    for key in ("cell_type", "population"):
        assert (nf.obs[key].astype(str).values == lo.obs[key].astype(str).values).all(), key
    versions = (out / "pipeline_info" / "versions.yml").read_text()
    assert f"bonemet: {VERSION}" in versions


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("profile", "options"),
    [("docker", "-u $(id -u):$(id -g) --pull never"), ("podman", "--pull never")],
)
def test_container_profiles_use_the_local_image(profile, options):
    """Both profiles run the local ``make container`` image and never pull it (no engine)."""
    r = subprocess.run(
        [NEXTFLOW, "config", "-o", "flat", "-profile", f"test,{profile}", str(ROOT)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    flat = dict(line.split(" = ", 1) for line in r.stdout.splitlines() if " = " in line)
    other = "podman" if profile == "docker" else "docker"
    assert flat[f"{profile}.enabled"] == "true" and flat[f"{other}.enabled"] == "false"
    assert flat["process.container"] == f"'{IMAGE}'"
    assert flat[f"{profile}.runOptions"] == f"'{options}'"
