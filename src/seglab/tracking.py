"""MLflow run records: the only module that imports mlflow.

One experiment per study; a parent run per variant with a child run per fold; one run
for each pretraining and one for the evaluation. Runs are found again by a stable key
tag (``seglab.key``), so re-running a job continues its run instead of adding one.
Parallel Snakemake jobs share one SQLite store: the experiment and parent runs are
created under a file lock, and calls are retried while the database is locked.
A tracking server (an ``http(s)://`` URI) is probed once per process before anything is
recorded, so that an unreachable server or refused credentials end the job at once with
one message instead of MLflow's minutes of retries.
"""

from __future__ import annotations

import base64
import http.client
import os
import ssl
import subprocess
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path
from typing import Any, Callable, TypeVar

from filelock import FileLock

T = TypeVar("T")
KEY_TAG = "seglab.key"
DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow's mark of an experiment's type: "custom_model_development" is a model-training
# experiment (runs, metrics, models), as opposed to "genai_development" (traces, prompts).
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
# The MLflow 3 UI picks its layout from a per-browser switch (GenAI / Model training) that it
# reads from the page's `workflowType` parameter, and opens every experiment on the GenAI
# overview unless told; experiment_url() links straight to the runs table.
UI_WORKFLOW = "machine_learning"


# How long the probe waits to connect to a tracking server: nothing listening, a wrong host
# or a firewall fail within this. A server that accepted the connection may take longer to
# answer (a loaded machine, a password hash): it gets PROBE_ANSWER_S.
PROBE_TIMEOUT_S = 3.0
PROBE_ANSWER_S = 30.0
# One request that needs a working server and, where it has auth, valid credentials.
PROBE_PATH = "/api/2.0/mlflow/experiments/search?max_results=1"


class TrackingError(Exception):
    """The tracking store cannot be used: a user-caused error with one message naming the fix."""


def resolve_uri(configured: str | None) -> str:
    """Config first, then $MLFLOW_TRACKING_URI, then ``sqlite:///mlflow.db`` in the project."""
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _uri_origin(configured: str | None) -> str:
    return "tracking.uri in the study config" if configured else "MLFLOW_TRACKING_URI"


def _probe_headers() -> dict[str, str]:
    """The credentials MLflow itself would send (it reads the same variables)."""
    user, password = os.environ.get("MLFLOW_TRACKING_USERNAME"), os.environ.get("MLFLOW_TRACKING_PASSWORD")
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    if token:
        return {"Authorization": f"Bearer {token}"}
    return {}


def _probe_tls() -> ssl.SSLContext:
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or None)


_PROBED: set[str] = set()


def probe_server(uri: str, origin: str = "MLFLOW_TRACKING_URI", timeout_s: float = PROBE_TIMEOUT_S,
                 answer_s: float = PROBE_ANSWER_S) -> None:
    """Ask an ``http(s)://`` tracking server one question, once per process, with no retries.

    Raises TrackingError naming ``uri`` and the fix when no connection opens in ``timeout_s``,
    the server does not answer in ``answer_s``, refuses the credentials, or is not an MLflow
    server. Other URIs (a SQLite file, a local folder) are not probed: opening them cannot hang.
    """
    if not uri.lower().startswith(("http://", "https://")) or uri in _PROBED:
        return
    fix = (f"Start the server, point {origin} at a running one, or unset it "
           f"(then runs are recorded in {DEFAULT_URI} in the project).")
    kept = "Nothing was trained; results already computed are kept."
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme.lower() == "https":
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            parts.hostname, parts.port or 443, timeout=timeout_s, context=_probe_tls())
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout_s)
    try:
        try:
            connection.connect()
        except OSError as error:
            raise TrackingError(f"MLflow tracking server {uri} ({origin}) is not reachable ({error}; waited at most "
                                f"{timeout_s:g}s). {fix} {kept}") from None
        try:
            connection.sock.settimeout(answer_s)
            connection.request("GET", parts.path.rstrip("/") + PROBE_PATH, headers=_probe_headers())
            reply = connection.getresponse()
            reply.read(1024)
        except OSError as error:
            raise TrackingError(f"MLflow tracking server {uri} ({origin}) accepted a connection but did not answer "
                                f"({error}; waited {answer_s:g}s). {fix} {kept}") from None
    finally:
        connection.close()
    if reply.status in (401, 403):
        raise TrackingError(
            f"MLflow tracking server {uri} ({origin}) refused the credentials (HTTP {reply.status}). "
            f"Set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of that server. {kept}")
    if reply.status != 200:
        raise TrackingError(f"{uri} ({origin}) answered HTTP {reply.status} to MLflow's experiments API: it is not a "
                            f"working MLflow tracking server. {fix} {kept}")
    _PROBED.add(uri)


def scheduler_tags() -> dict[str, str]:
    """The batch scheduler's job behind this process (SLURM), so a run leads to its job's logs."""
    job = os.environ.get("SLURM_JOB_ID")
    return {"slurm.job_id": job} if job else {}


def _git(args: list[str], cwd: Path | None) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def git_commit(cwd: Path | None = None) -> str:
    return (_git(["rev-parse", "HEAD"], cwd) or "").strip() or "unknown"


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """The commit (also as MLflow's own source tag, so the UI shows it) and whether the tree
    had uncommitted changes: a dirty tree means the commit alone does not reproduce the run."""
    commit = git_commit(cwd)
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    dirty = "unknown" if status is None else str(bool(status.strip())).lower()
    return {"seglab.commit": commit, "mlflow.source.git.commit": commit, "seglab.git_dirty": dirty}


def source_tags(command: str) -> dict[str, str]:
    """What the runs table's Source column shows: the seglab stage that wrote the run."""
    return {"mlflow.source.name": f"seglab {command}", "mlflow.source.type": "JOB"}


def experiment_url(ui: str, experiment_id: str) -> str:
    """The experiment's runs table in the MLflow UI at ``ui`` (e.g. http://127.0.0.1:5000)."""
    return f"{ui.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType={UI_WORKFLOW}"


def print_ui_links(uri: str | None = None, ui: str = "http://127.0.0.1:5000") -> None:
    """The runs table of every seglab study in the store, as ``make ui`` prints them."""
    from mlflow.tracking import MlflowClient

    uri = resolve_uri(uri)
    experiments = [e for e in MlflowClient(tracking_uri=uri).search_experiments()
                   if e.tags.get(EXPERIMENT_KIND_TAG) == MODEL_TRAINING]
    print(f"MLflow UI on {ui} for {uri}; each study's runs table:")
    for experiment in experiments:
        print(f"  {experiment.name:<28} {experiment_url(ui, experiment.experiment_id)}")
    if not experiments:
        print("  (no study recorded yet: run one with `make run`)")


def _retry(call: Callable[[], T], attempts: int = 30, also: tuple[str, ...] = ()) -> T:
    """Retry while SQLite reports a lock: parallel jobs write to the same store.

    ``also``: more error texts (lower case) that a retry resolves for this call.
    """
    for attempt in range(attempts):
        try:
            return call()
        except Exception as exc:  # mlflow wraps sqlite errors in several exception types
            text = str(exc).lower()
            if not any(word in text for word in ("locked", "busy", *also)) or attempt == attempts - 1:
                raise
            time.sleep(min(0.1 * 2**attempt, 2.0))
    raise AssertionError("unreachable")


def _lock(uri: str) -> FileLock:
    """One lock per store, beside the SQLite file (or in .seglab/ for server stores)."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///"):] + ".lock")
    else:
        path = Path(".seglab") / "mlflow.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(path), timeout=600)


class Run:
    """A handle on one MLflow run; every call is retried on a locked store."""

    def __init__(self, client: Any, run_id: str, uri: str | None = None) -> None:
        self.client = client
        self.run_id = run_id
        self.uri = uri
        self._monitor: Any = None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(k, str(v)[:6000]) for k, v in params.items()]
        existing = _retry(lambda: self.client.get_run(self.run_id)).data.params
        # MLflow refuses to change a logged param; a continued run keeps the first values.
        items = [p for p in items if p.key not in existing]
        for i in range(0, len(items), 100):
            _retry(lambda chunk=items[i:i + 100]: self.client.log_batch(self.run_id, params=chunk))

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        items = [Metric(k, float(v), stamp, step or 0) for k, v in metrics.items() if v is not None]
        for i in range(0, len(items), 500):
            _retry(lambda chunk=items[i:i + 500]: self.client.log_batch(self.run_id, metrics=chunk))

    def logged_steps(self, key: str) -> set[int]:
        """Steps at which metric ``key`` was logged (a resumed job logs only the missing ones)."""
        return {m.step for m in _retry(lambda: self.client.get_metric_history(self.run_id, key))}

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(k, str(v)) for k, v in tags.items()]
        _retry(lambda: self.client.log_batch(self.run_id, tags=items))

    def log_dataset(self, name: str, digest: str, location: str, context: str,
                    profile: dict[str, Any] | None = None) -> None:
        """Record the run's dataset as an MLflow dataset input (the runs table's Dataset column).

        ``digest`` is seglab's data fingerprint hash; ``location`` the raw data (a folder or a
        URL, e.g. a DVC remote), resolved by MLflow's dataset-source registry. Logging the same
        dataset again (a resumed job) adds nothing.
        """
        import json

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.entities import Dataset, DatasetInput, InputTag

        uri = location if "://" in location else Path(location).resolve().as_uri()
        with warnings.catch_warnings():
            # A file:// URI matches MLflow's local source twice over; it warns and picks it.
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
            source = resolve_dataset_source(uri)
        dataset = Dataset(name=name, digest=digest, source_type=source._get_source_type(), source=source.to_json(),
                          profile=json.dumps(profile, sort_keys=True) if profile else None)
        logged = _retry(lambda: self.client.get_run(self.run_id)).inputs.dataset_inputs
        if any(d.dataset.name == name and d.dataset.digest == digest for d in logged):
            return
        tags = [InputTag("mlflow.data.context", context)]
        # MLflow looks the dataset up in the experiment and inserts it when missing: two folds that
        # start together both miss it and the second insert fails (UNIQUE constraint). Under the
        # store's lock the second finds the first one's record; a store shared beyond this
        # machine's lock gets the same effect from a retry, which then finds the record.
        with _lock(self.uri or self.client.tracking_uri):
            _retry(lambda: self.client.log_inputs(self.run_id, datasets=[DatasetInput(dataset, tags)]),
                   also=("unique constraint",))

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        if Path(path).exists():
            _retry(lambda: self.client.log_artifact(self.run_id, str(path), folder))

    def log_bytes(self, data: bytes, artifact_file: str) -> None:
        """An in-memory artifact (a PNG, a JSON) stored as ``artifact_file`` in the run."""
        folder, _, name = artifact_file.rpartition("/")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_bytes(data)
            self.log_artifact(path, folder or None)

    def log_pytorch_model(self, model: Any, name: str = "model", pip_requirements: list[str] | None = None,
                          input_example: Any = None) -> None:
        """``mlflow.pytorch.log_model`` into this run (only when ``tracking.log_model`` asks:
        the weights are versioned by DVC; this is a convenience copy for MLflow serving)."""
        import mlflow
        import mlflow.pytorch

        # The fluent API reads a process-wide tracking URI, and set_tracking_uri also exports it
        # as MLFLOW_TRACKING_URI to every later subprocess: put the environment back afterwards.
        exported = os.environ.get("MLFLOW_TRACKING_URI")
        mlflow.set_tracking_uri(self.uri or self.client.tracking_uri)
        try:
            with mlflow.start_run(run_id=self.run_id, log_system_metrics=False):
                # Explicit requirements: inferring them imports the model in a subprocess (slow).
                # Pickle, not the traced pt2 format: tracing a U-Net takes tens of seconds on a CPU.
                _retry(lambda: mlflow.pytorch.log_model(model, name=name, pip_requirements=pip_requirements,
                                                        input_example=input_example, serialization_format="pickle"))
        finally:
            if exported is None:
                os.environ.pop("MLFLOW_TRACKING_URI", None)
            else:
                os.environ["MLFLOW_TRACKING_URI"] = exported
        # Leaving start_run() ended the run; the stage ends it itself (FINISHED or FAILED).
        _retry(lambda: self.client.update_run(self.run_id, status="RUNNING"))

    def start_system_metrics(self, interval_s: float) -> bool:
        """Sample CPU, memory, disk, network (and GPU, where pynvml is installed) every
        ``interval_s`` seconds as ``system/*`` metrics. Optional: needs psutil; returns False
        where unavailable. The monitor is a daemon thread; a failed write only stops it."""
        try:
            import psutil  # noqa: F401  (mlflow's monitors need it; it may be absent)
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
        except ImportError:
            return False
        self._monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s, resume_logging=True,
                                             tracking_uri=self.uri or self.client.tracking_uri)
        self._monitor.start()
        return True

    def finish(self, status: str = "FINISHED") -> None:
        if self._monitor is not None:
            # Stop sampling before the run ends: the monitor flushes its last samples.
            self._monitor.finish()
            self._monitor = None
        _retry(lambda: self.client.set_terminated(self.run_id, status))


class NullRun(Run):
    """Used when tracking is disabled: the same calls, recorded nowhere."""

    def __init__(self) -> None:
        self.run_id = "untracked"

    def log_params(self, params: dict[str, Any]) -> None: ...
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None: ...
    def logged_steps(self, key: str) -> set[int]: return set()
    def set_tags(self, tags: dict[str, Any]) -> None: ...
    def log_dataset(self, name: str, digest: str, location: str, context: str,
                    profile: dict[str, Any] | None = None) -> None: ...
    def log_artifact(self, path: Path, folder: str | None = None) -> None: ...
    def log_bytes(self, data: bytes, artifact_file: str) -> None: ...
    def log_pytorch_model(self, model: Any, name: str = "model", pip_requirements: list[str] | None = None,
                          input_example: Any = None) -> None: ...
    def start_system_metrics(self, interval_s: float) -> bool:
        return False
    def finish(self, status: str = "FINISHED") -> None: ...


class Tracker:
    """Opens runs of one study's experiment in one store."""

    def __init__(self, uri: str, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.experiment = experiment
        # Opening a new SQLite store creates and migrates its tables: two processes doing
        # it at once (two studies started together) fail with "duplicate column", so the
        # first opening happens under the store's lock.
        with _lock(uri):
            self.client = MlflowClient(tracking_uri=uri)
        self.experiment_id = self._experiment_id()

    def _experiment_id(self) -> str:
        """The study's experiment, created (or restored) and marked as a model-training one."""
        with _lock(self.uri):
            found = _retry(lambda: self.client.get_experiment_by_name(self.experiment))
            if found is None:
                return _retry(lambda: self.client.create_experiment(self.experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING}))
            if found.lifecycle_stage == "deleted":
                _retry(lambda: self.client.restore_experiment(found.experiment_id))
            if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
                # Stores from before this tag existed, or an experiment made by hand.
                _retry(lambda: self.client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING))
            return found.experiment_id

    def _find(self, key: str) -> str | None:
        runs = _retry(lambda: self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`{KEY_TAG}` = '{key}'", max_results=1,
        ))
        return runs[0].info.run_id if runs else None

    def open(self, key: str, name: str, parent_key: str | None = None, tags: dict[str, Any] | None = None) -> Run:
        """The run with this key, created if missing (and its parent's, for nesting)."""
        with _lock(self.uri):
            parent_id = None
            if parent_key is not None:
                # A parent made by its first child names the same stage as the child.
                source = {k: v for k, v in (tags or {}).items() if k.startswith("mlflow.source.")}
                parent_id = self._find(parent_key) or self._create(parent_key, parent_key.split("/")[-1], None, source)
            run_id = self._find(key) or self._create(key, name, parent_id, tags or {})
        run = Run(self.client, run_id, self.uri)
        if _retry(lambda: self.client.get_run(run_id)).info.status != "RUNNING":
            _retry(lambda: self.client.update_run(run_id, status="RUNNING"))
        if tags:
            run.set_tags(tags)
        return run

    def _create(self, key: str, name: str, parent_id: str | None, tags: dict[str, Any]) -> str:
        all_tags = {KEY_TAG: key, "mlflow.runName": name, **{k: str(v) for k, v in tags.items()}}
        if parent_id:
            all_tags["mlflow.parentRunId"] = parent_id
        run = _retry(lambda: self.client.create_run(self.experiment_id, tags=all_tags, run_name=name))
        return run.info.run_id

    def finish_parents(self) -> None:
        """Mark variant parent runs finished once their folds are done (called by aggregate)."""
        runs = _retry(lambda: self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'"))
        for run in runs:
            if "mlflow.parentRunId" not in run.data.tags:
                _retry(lambda rid=run.info.run_id: self.client.set_terminated(rid, "FINISHED"))

    def runs(self) -> list[Any]:
        return _retry(lambda: self.client.search_runs([self.experiment_id], max_results=10000))


def open_tracker(tracking_cfg: dict[str, Any], experiment: str) -> Tracker | None:
    if not tracking_cfg["enabled"]:
        return None
    uri = resolve_uri(tracking_cfg["uri"])
    probe_server(uri, _uri_origin(tracking_cfg["uri"]))
    return Tracker(uri, experiment)


def open_run(tracking_cfg: dict[str, Any], experiment: str, key: str, name: str,
             parent_key: str | None = None, tags: dict[str, Any] | None = None, monitor: bool = True,
             command: str | None = None) -> Run:
    """Open (or continue) the run ``key``; with ``tracking.system_metrics`` it samples the machine.

    ``command`` is the seglab stage writing the run (``train`` ...), shown as its Source.
    """
    tracker = open_tracker(tracking_cfg, experiment)
    if tracker is None:
        return NullRun()
    base = {**git_tags(), "seglab.study": experiment, **scheduler_tags(), **(source_tags(command) if command else {})}
    run = tracker.open(key, name, parent_key, {**base, **(tags or {})})
    if monitor and tracking_cfg["system_metrics"]:
        run.start_system_metrics(float(tracking_cfg["system_metrics_interval"]))
    return run
