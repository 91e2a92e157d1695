"""The Dagster UI end to end, as a user meets it with `vq ui`.

`dagster dev` serves the repository's workspace with an instance configured by the repository's
own dagster.yaml (its storage moved under a temporary folder) over a small hand-written lake.
A headless Chromium renders the global asset graph; a partition of `raw_videos` is then
materialised through the webserver's GraphQL API, the way the UI's "Materialize" button does,
and must land in the lake. Finally SIGTERM to `dagster dev` must stop its whole process group.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
import yaml
from PIL import Image

from vq_assets_tests.landing import event, ts, video, write_day

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"
CHROMIUM = shutil.which("chromium")

CHAIN = [
    "raw_videos",
    "cowatch_pairs",
    "cdml_model",
    "related_videos",
    "retrieval_prior",
    "watch_events",
    "video_watch_daily",
    "video_labels_7d",
    "creator_features",
    "video_embeddings",
    "training_set",
    "quality_model",
    "model_evaluation",
    "quality_scores",
    "flywheel_sampling_weights",
    "flywheel_lift",
]
DAYS = ["2026-01-01", "2026-01-02", "2026-01-03"]
DAY = DAYS[1]
STARTUP_TIMEOUT_S = 120
RUN_TIMEOUT_S = 120
STOP_TIMEOUT_S = 30

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not on PATH (.ci/run installs it with apt-get)"
)


# -- the environment a user has -------------------------------------------------------------


def build_lake(root: Path) -> None:
    for i, day in enumerate(DAYS):
        vids = [video(f"v{i}{s}", ts(day, h), creator_id=f"c{i}") for s, h in (("a", 6), ("b", 9))]
        write_day(root, "videos", day, vids)
        write_day(root, "watch_events", day, [event(v["video_id"], ts(day, 12), 5.0) for v in vids])


def instance_home(home: Path) -> Path:
    """A DAGSTER_HOME holding the repository's dagster.yaml, its relative paths made absolute."""

    def absolute(node):
        if isinstance(node, dict):
            return {
                k: str(home / v)
                if k == "base_dir" and isinstance(v, str) and not os.path.isabs(v)
                else absolute(v)
                for k, v in node.items()
            }
        return node

    config = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(yaml.safe_dump(absolute(config)))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def artifacts_dir() -> Path:
    path = Path(os.environ.get("VQ_TEST_ARTIFACTS") or REPO_ROOT / "vq_assets_tests/e2e/artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


# -- the server ------------------------------------------------------------------------------


def _default_signals() -> None:
    # dagster dev maps SIGTERM onto its SIGINT handler; a shell that started pytest in the
    # background leaves SIGINT ignored, and dagster dev would then ignore SIGTERM too.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def start_server(port: int, env: dict[str, str], log: Path) -> subprocess.Popen:
    argv = [str(DAGSTER), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"]
    with open(log, "wb") as out:
        return subprocess.Popen(
            argv,
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_default_signals,
        )


def log_tail(log: Path, n: int = 40) -> str:
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return "\n".join(lines[-n:])


def wait_until_up(proc: subprocess.Popen, base: str, log: Path) -> float:
    started = time.monotonic()
    while time.monotonic() - started < STARTUP_TIMEOUT_S:
        if proc.poll() is not None:
            pytest.fail(f"dagster dev exited with {proc.returncode}:\n{log_tail(log)}")
        try:
            with urllib.request.urlopen(f"{base}/server_info", timeout=5) as r:
                info = json.load(r)
            assert info["dagster_webserver_version"]
            return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    pytest.fail(f"dagster dev did not answer in {STARTUP_TIMEOUT_S}s:\n{log_tail(log)}")


def process_tree(pid: int) -> list[psutil.Process]:
    """The server and every process it started, including orphans left in its group."""
    procs = {}
    try:
        root = psutil.Process(pid)
        procs[pid] = root
        for child in root.children(recursive=True):
            procs[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pid:
                procs[p.pid] = p
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return list(procs.values())


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.NoSuchProcess:
            pass
    return out


def stop_server(proc: subprocess.Popen, seen: list[psutil.Process]) -> list[str]:
    """SIGTERM to `dagster dev` itself, which stops its children in order; SIGKILL to the
    process group and whatever is left after a timeout. Returns what had to be killed (or still
    lives), as `pid cmdline` strings.

    Not SIGTERM to the whole group: a code server that gets it directly exits before dagster dev
    does, dagster dev restarts it, and the new one outlives the signal until its heartbeat
    times out."""
    tree = {p.pid: p for p in seen + process_tree(proc.pid)}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        pass
    tree.update({p.pid: p for p in process_tree(proc.pid)})
    psutil.wait_procs(alive(list(tree.values())), timeout=5)
    stubborn = alive(list(tree.values()))
    described = []
    for p in stubborn:
        try:
            described.append(f"{p.pid} {' '.join(p.cmdline())[:160]}")
            p.kill()
        except psutil.NoSuchProcess:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)
    return described


# -- what the browser and the UI's client do -------------------------------------------------


def graphql(base: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(
        f"{base}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        answer = json.load(r)
    assert "errors" not in answer, answer["errors"]
    return answer["data"]


def chromium(url: str, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    argv = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={profile}",
        "--window-size=2400,2400",
        "--virtual-time-budget=15000",
        *mode,
        url,
    ]
    return subprocess.run(argv, capture_output=True, timeout=90, check=True)


def node_labels(dom: str) -> list[str]:
    """The names printed on the asset graph's nodes (the UI shortens long ones: `a_…_b`)."""
    return re.findall(r'class="AssetNode_assetName[^"]*"[^>]*>([^<]+)<', dom)


def shown(asset: str, labels: list[str]) -> bool:
    for label in labels:
        if label == asset:
            return True
        if "…" in label:
            head, tail = label.split("…", 1)
            if asset.startswith(head) and asset.endswith(tail) and len(asset) > len(label) - 1:
                return True
    return False


ASSETS = """{ assetNodes { assetKey { path } groupName
  assetChecksOrError { ... on AssetChecks { checks { name } } } } }"""

LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename
  ... on LaunchRunSuccess { run { runId } }
  ... on PythonError { message }
  ... on InvalidSubsetError { message }
  ... on RunConfigValidationInvalid { errors { message } } } }"""

RUN = """query($id: ID!) { runOrError(runId: $id) { __typename
  ... on Run { status assetSelection { path } tags { key value } } } }"""

FAILURES = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
  __typename ... on ExecutionStepFailureEvent { stepKey error { message } }
  ... on RunFailureEvent { message } } } } }"""

MATERIALIZATIONS = """query($p: [String!]) { assetOrError(assetKey: {path: ["raw_videos"]}) {
  ... on Asset { assetMaterializations(partitions: $p) { partition runId } } } }"""


def wait_for_run(base: str, run_id: str) -> dict:
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while time.monotonic() < deadline:
        run = graphql(base, RUN, {"id": run_id})["runOrError"]
        if run["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return run
        time.sleep(1)
    pytest.fail(f"run {run_id} still {run['status']} after {RUN_TIMEOUT_S}s")


# -- the test --------------------------------------------------------------------------------


def test_ui_shows_the_chain_and_materialises_a_partition(tmp_path):
    lake = tmp_path / "lake"
    build_lake(lake)
    home = instance_home(tmp_path / "dagster_home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "VQ_HOME": str(tmp_path / "vq_home"),
        "VQ_LAKE": str(lake),
        "VQ_DEPLOYMENT": "local",
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    port, log = free_port(), tmp_path / "dagster_dev.log"
    base = f"http://127.0.0.1:{port}"
    timings: dict[str, float] = {}
    artifacts = artifacts_dir()

    proc = start_server(port, env, log)
    seen: list[psutil.Process] = []
    try:
        timings["startup"] = wait_until_up(proc, base, log)

        # The code location loaded every asset of the chain.
        nodes = graphql(base, ASSETS)["assetNodes"]
        by_name = {n["assetKey"]["path"][-1]: n for n in nodes}
        assert set(CHAIN) <= set(by_name), sorted(by_name)

        # The global asset graph, every group expanded, as a browser renders it.
        groups = sorted({n["groupName"] for n in nodes})
        expanded = ",".join(f"global@global:{g}" for g in groups)
        url = f"{base}/asset-groups?" + urllib.parse.urlencode({"expanded": expanded})
        t0 = time.monotonic()
        dom = chromium(url, tmp_path / "chromium-dom", "--dump-dom").stdout.decode()
        shot = artifacts / "asset_graph.png"
        shot.unlink(missing_ok=True)
        chromium(url, tmp_path / "chromium-shot", f"--screenshot={shot}")
        timings["browser"] = time.monotonic() - t0
        (artifacts / "asset_graph.html").write_text(dom)
        labels = node_labels(dom)
        missing = [a for a in CHAIN if not shown(a, labels)]
        assert not missing, f"not drawn on the asset graph: {missing}; drawn: {labels}"
        assert "Global asset lineage" in dom
        with Image.open(shot) as image:
            assert image.size == (2400, 2400)
            # A rendered graph, not a blank page: many distinct colours.
            assert len(image.convert("RGB").getcolors(maxcolors=1 << 20)) > 50

        # "Materialize" one partition of raw_videos, as the UI's button does it.
        checks = by_name["raw_videos"]["assetChecksOrError"]["checks"]
        params = {
            "selector": {
                "repositoryLocationName": "vq",
                "repositoryName": "__repository__",
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": ["raw_videos"]}],
                "assetCheckSelection": [
                    {"assetKey": {"path": ["raw_videos"]}, "name": c["name"]} for c in checks
                ],
            },
            "mode": "default",
            "executionMetadata": {"tags": [{"key": "dagster/partition", "value": DAY}]},
        }
        t0 = time.monotonic()
        launched = graphql(base, LAUNCH, {"p": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        seen += process_tree(proc.pid)
        run = wait_for_run(base, run_id)
        timings["run"] = time.monotonic() - t0
        if run["status"] != "SUCCESS":
            events = graphql(base, FAILURES, {"id": run_id})["logsForRun"]["events"]
            pytest.fail(f"run {run_id} ended {run['status']}: {[e for e in events if e]}")
        assert {"key": "dagster/partition", "value": DAY} in run["tags"]

        part = lake / "assets" / "raw_videos" / f"dt={DAY}" / "part-0.parquet"
        assert part.exists(), sorted(str(p) for p in lake.rglob("*.parquet"))
        assert sorted(pq.read_table(part).column("video_id").to_pylist()) == ["v1a", "v1b"]
        assert not (lake / "assets" / "raw_videos" / f"dt={DAYS[0]}").exists()
        materialized = graphql(base, MATERIALIZATIONS, {"p": [DAY]})["assetOrError"]
        assert [(m["partition"], m["runId"]) for m in materialized["assetMaterializations"]] == [
            (DAY, run_id)
        ]
        seen += process_tree(proc.pid)
    finally:
        t0 = time.monotonic()
        survivors = stop_server(proc, seen)
        timings["stop"] = time.monotonic() - t0
        if log.exists():
            shutil.copy(log, artifacts / "dagster_dev.log")
        print("timings (s):", {k: round(v, 1) for k, v in timings.items()})
    assert not survivors, f"still running {STOP_TIMEOUT_S}s after SIGTERM: {survivors}"
