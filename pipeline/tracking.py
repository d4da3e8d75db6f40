"""MLflow tracking: one parent run per pipeline run, a nested run per stage (and per trial).

Everything goes through an explicit `MlflowClient` and explicit run ids, so stage code can log
to its own nested run from anywhere in the driver. Runs end FAILED on an exception and on
SIGTERM/SIGINT (the runner turns those signals into `Terminated`); runs left RUNNING by a
process that was killed outright are marked FAILED the next time the pipeline starts.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Iterator, Optional
from urllib.parse import urlsplit

from pipeline.config import Config, TrackingConfig, flatten
from pipeline.stopping import Terminated  # noqa: F401  (Terminated: re-exported)
from pipeline.stopping import received as stop_signal

# Function-local imports: they bring in MLflow and SQLAlchemy, which importing this module does not need.

PACKAGES = ("ray", "torch", "mlflow", "webdataset", "pyarrow", "clean-fid", "numpy", "pillow")
MAX_PARAM_LENGTH = 6000
# The experiment tag holding an experiment's kind (the MLflow 3.x UI writes it when a user picks
# one); "custom_model_development" is its "Machine learning" kind, "genai_development" the GenAI one.
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
DESCRIPTION_TAG = "mlflow.note.content"  # a run's description in the MLflow UI (Markdown)
DATASET_DIGEST_CHARS = 16  # MLflow keeps at most 36 characters of a dataset digest


def _sqlite_path(uri: str) -> Optional[Path]:
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def _process_start_time(pid: int) -> Optional[str]:
    """The kernel's start time of a process (field 22 of /proc/<pid>/stat), or None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


# MLflow 3 backends this pipeline can use; the file store (a plain path, file://) is refused.
DATABASE_SCHEMES = {"sqlite": None, "postgresql": 5432, "mysql": 3306, "mssql": 1433}
SERVER_SCHEMES = ("http", "https")
OTHER_SCHEMES = ("databricks", "databricks-uc")


def uri_form_problem(uri: str) -> Optional[str]:
    """What makes `uri` no tracking URI this pipeline can use, judged from its text alone (an
    unknown scheme, the file store MLflow 3 refuses, a sqlite URI without a file); None if usable.
    A config rule (pipeline.config) names the key."""
    if uri.split("://", 1)[0].lower() in OTHER_SCHEMES:  # databricks, databricks://profile
        return None
    if "://" not in uri:
        return "not a tracking URI; MLflow 3 refuses the file store: use sqlite:///mlflow.db or http://host:port"
    scheme = uri.split("://", 1)[0].lower()
    base = scheme.split("+", 1)[0]  # postgresql+psycopg2
    known = sorted(DATABASE_SCHEMES) + list(SERVER_SCHEMES) + list(OTHER_SCHEMES)
    if base == "file":
        return "MLflow 3 refuses the file store: use sqlite:///mlflow.db or http://host:port"
    if base not in known:
        return f"unknown scheme {scheme!r} (known: {', '.join(known)})"
    if base == "sqlite" and not str(_sqlite_path(uri) or ""):
        return "a sqlite URI names a file: sqlite:///relative.db or sqlite:////absolute.db"
    if base in SERVER_SCHEMES or (base in DATABASE_SCHEMES and base != "sqlite"):
        from urllib.parse import urlsplit

        if not urlsplit(uri).hostname:
            return "no host in the URI"
    return None


def reachability_problem(uri: str, timeout: float = 5.0) -> Optional[str]:
    """Why the tracking store at `uri` (of a usable form) cannot be reached now, asked before
    anything starts and within `timeout` seconds: a sqlite file's directory that does not exist,
    an MLflow server that does not answer, a database host that refuses; None when reachable."""
    base = uri.split("://", 1)[0].lower().split("+", 1)[0]
    if base in OTHER_SCHEMES:
        return None
    if base == "sqlite":
        db = _sqlite_path(uri)
        parent = db.resolve().parent
        if not parent.is_dir():
            return f"the directory {parent} does not exist"
        if db.exists() and not db.is_file():
            return f"{db} is not a file"
        return None
    if base in SERVER_SCHEMES:
        return _server_problem(uri, timeout)
    if base not in DATABASE_SCHEMES:
        return None
    parts = urlsplit(uri)
    port = parts.port or DATABASE_SCHEMES[base]
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout).close()
    except OSError as error:
        return f"database host {parts.hostname}:{port} not reachable within {timeout:g}s ({error})"
    return None


def _server_problem(uri: str, timeout: float) -> Optional[str]:
    """An MLflow server answers GET /health; any HTTP answer (even 401/403) shows it is there."""
    try:
        urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout).close()
    except urllib.error.HTTPError:
        return None
    except (OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        return f"no MLflow server answers within {timeout:g}s ({reason})"
    return None


def git_state(repo_dir: Optional[Path] = None) -> dict[str, str]:
    """The commit of the code that runs and whether the tree was dirty."""
    repo_dir = repo_dir or Path(__file__).resolve().parent.parent
    env_commit = os.environ.get("PIPELINE_GIT_COMMIT")
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo_dir, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo_dir,
                                capture_output=True, text=True, timeout=10, check=True).stdout
        return {"git_commit": commit, "git_dirty": str(bool(status.strip())).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": env_commit or "unknown", "git_dirty": "unknown"}


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_POSTGRES_LOCK_KEY = int.from_bytes(b"pipeline", "big") >> 1  # any fixed bigint, unique to this use


@contextlib.contextmanager
def _postgres_lock(uri: str) -> Iterator[None]:
    """A PostgreSQL advisory lock held for the block: serialises MLflow's schema creation (and the
    experiment lookup-or-create) between processes on any host using the same database."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(uri, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:key)"), {"key": _POSTGRES_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:key)"), {"key": _POSTGRES_LOCK_KEY})
    finally:
        engine.dispose()


class Tracker:
    """The MLflow side of one pipeline process."""

    def __init__(self, cfg: TrackingConfig):
        import mlflow
        from mlflow.tracking import MlflowClient

        self.cfg = cfg
        self.uri = cfg.uri
        db = _sqlite_path(cfg.uri)
        if db is not None:
            # Creating a fresh sqlite store runs schema migrations; two processes doing that at
            # once can corrupt it, so the first access is serialised with a lock file beside it.
            db = db.resolve()
            self.uri = f"sqlite:///{db}"
            lock = _file_lock(db.with_name(db.name + ".lock"))
        elif cfg.uri.startswith("postgresql"):
            lock = _postgres_lock(cfg.uri)  # the same race on a fresh PostgreSQL database
        else:
            lock = contextlib.nullcontext()
        mlflow.set_tracking_uri(self.uri)
        with lock:
            self.client = MlflowClient(tracking_uri=self.uri)
            self.experiment_id = self._experiment()
            self._mark_model_training()
        self.host = socket.gethostname()

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.cfg.experiment)
        if found is not None:
            return found.experiment_id
        if self.uri.startswith(("http://", "https://")):
            # A tracking server keeps artifacts where it was told (--artifacts-destination, the object
            # store); a local artifact_location would put them on the driver's disk instead.
            location = None
        else:
            location = self.cfg.artifact_location
            if "://" not in location:
                location = Path(location).resolve().as_uri()
        from mlflow.exceptions import MlflowException

        try:
            return self.client.create_experiment(self.cfg.experiment, artifact_location=location)
        except MlflowException as exc:  # another process created it between the lookup and here
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            return self.client.get_experiment_by_name(self.cfg.experiment).experiment_id

    def _mark_model_training(self) -> None:
        """Tag the experiment a model-training one, new or made before this existed; an experiment
        that already names its kind keeps it."""
        if EXPERIMENT_KIND_TAG not in self.client.get_experiment(self.experiment_id).tags:
            self.client.set_experiment_tag(self.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)

    def ui_path(self, run_id: Optional[str] = None, artifact: Optional[str] = None) -> str:
        """The MLflow UI's page of this experiment's runs, of one run, or of one of its artifacts,
        relative to the UI's address. MLflow 3.17's UI opens every experiment as a GenAI one
        (traces, token usage), whatever its kind tag, unless the link asks for the model-training
        view (`workflowType`) or the user picked it in that browser."""
        path = f"#/experiments/{self.experiment_id}/runs" + (f"/{run_id}" if run_id else "")
        return path + (f"/artifacts/{artifact}" if run_id and artifact else "") + "?workflowType=machine_learning"

    def ui_url(self, base: str, run_id: Optional[str] = None) -> str:
        """`ui_path` under the UI's address `base`, e.g. http://127.0.0.1:5000."""
        return f"{base.rstrip('/')}/{self.ui_path(run_id)}"

    # -- runs left RUNNING by killed processes

    def fail_stale_runs(self) -> list[str]:
        """Mark FAILED the RUNNING runs of this host whose process is gone; returns their ids."""
        stale = []
        runs = self.client.search_runs([self.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                       max_results=1000)
        for run in runs:
            tags = run.data.tags
            if tags.get("pipeline.host") != self.host or "pipeline.pid" not in tags:
                continue
            pid = int(tags["pipeline.pid"])
            if _process_start_time(pid) == tags.get("pipeline.pid_start"):
                continue  # still running
            self._end_failed(run.info.run_id, "process gone (killed); marked at next start")
            stale.append(run.info.run_id)
        return stale

    def _end_failed(self, run_id: str, reason: str) -> None:
        """Tag the failure and end the run FAILED; again with a fresh client if this one fails (a
        signal that cut a write can leave its database session unusable)."""
        from mlflow.tracking import MlflowClient

        for attempt in range(2):
            try:
                client = self.client if attempt == 0 else MlflowClient(tracking_uri=self.uri)
                client.set_tag(run_id, "pipeline.failure", reason[:5000])
                client.set_terminated(run_id, status="FAILED")
                return
            except Exception:
                if attempt == 1:
                    raise

    def fail_open_runs_of_this_process(self, reason: str) -> list[str]:
        """Mark FAILED, with `reason`, the runs of this process still RUNNING: when the pipeline's
        run ends on an error or a stop signal, a nested run the signal caught between its creation
        and its own handler (a sweep trial being logged) must not wait for the next start to be
        marked. A fresh client: the signal may have cut the current one's session mid-write."""
        from mlflow.tracking import MlflowClient

        marked = []
        with contextlib.suppress(Exception):
            client = MlflowClient(tracking_uri=self.uri)
            mine = self._process_tags()
            runs = client.search_runs(
                [self.experiment_id], max_results=1000,
                filter_string=f"attributes.status = 'RUNNING' and tags.`pipeline.pid` = '{mine['pipeline.pid']}'")
            for run in runs:
                if run.data.tags.get("pipeline.host") != self.host:
                    continue
                self._end_failed(run.info.run_id, reason)
                marked.append(run.info.run_id)
        return marked

    # -- runs

    def _process_tags(self) -> dict[str, str]:
        pid = os.getpid()
        return {"pipeline.host": self.host, "pipeline.pid": str(pid),
                "pipeline.pid_start": _process_start_time(pid) or ""}

    @contextlib.contextmanager
    def run(self, name: str, tags: dict[str, str], parent: Optional[str] = None) -> Iterator["RunLogger"]:
        """A run that ends FINISHED, or FAILED on any exception, SIGTERM or SIGINT."""
        all_tags = {safe_key(k): str(v) for k, v in {**self._process_tags(), **tags}.items()}
        if parent is not None:
            all_tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags)
        logger = RunLogger(self.client, run.info.run_id)
        try:
            yield logger
        except BaseException as exc:
            signum = stop_signal()  # a library may have turned the signal's Terminated into its own error
            reason = f"{Terminated(signum)!r}" if signum is not None else f"{type(exc).__name__}: {exc}"
            self._end_failed(run.info.run_id, reason)
            if parent is None:
                self.fail_open_runs_of_this_process(reason)
            raise
        else:
            self.client.set_terminated(run.info.run_id, status="FINISHED")

    def pipeline_run(self, config: Config, config_path: str, keys: dict[str, str],
                     git: Optional[dict[str, str]] = None, name: str = "pipeline"):
        tags = {
            "pipeline.config_hash": config.hash(),
            "pipeline.config_file": config_path,
            **{f"pipeline.{k}": v for k, v in (git or git_state()).items()},
            **{f"version.{k}": v for k, v in package_versions().items()},
            **{f"store.key.{label}": key for label, key in keys.items()},
            "store.root": config.store.root,
        }
        return self.run(name, tags)


class RunLogger:
    """Logging into one MLflow run by id (what a stage's context hands out)."""

    def __init__(self, client, run_id: str):
        self.client = client
        self.run_id = run_id

    def set_tags(self, tags: dict[str, Any]) -> None:
        from mlflow.entities import RunTag

        items = [RunTag(safe_key(k), str(v)) for k, v in tags.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, tags=items[i:i + 100])

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(safe_key(k), _param_value(v)) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[i:i + 100])

    def log_metrics(self, metrics: dict[str, float], step: Optional[int] = None) -> None:
        self.log_metric_rows([(step or 0, metrics)])

    def log_metric_rows(self, rows: list[tuple[int, dict[str, float]]]) -> None:
        """Many (step, metrics) rows, e.g. a training history, in batches of 1000 values."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(safe_key(k), float(v), now, int(step)) for step, metrics in rows for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(self.run_id, metrics=items[i:i + 1000])

    def log_artifact(self, local_path: str, artifact_path: Optional[str] = None) -> None:
        self.client.log_artifact(self.run_id, local_path, artifact_path)

    def log_text(self, text: str, name: str) -> None:
        self.client.log_text(self.run_id, text, name)

    def log_dict(self, obj: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / name
            path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str))
            self.client.log_artifact(self.run_id, str(path))

    def register_model(self, name: str, artifact_path: str, tags: Optional[dict[str, Any]] = None,
                       description: str = "") -> str:
        """A new version of registered model `name` from this run's logged `artifact_path`
        (created on first use); returns "name/version". Raises where the backend has no registry."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.get_registered_model(name)
        except MlflowException:
            self.client.create_registered_model(name, description=description or None)
        version = self.client.create_model_version(name, source=f"runs:/{self.run_id}/{artifact_path}",
                                                   run_id=self.run_id,
                                                   tags={k: str(v) for k, v in (tags or {}).items()})
        return f"{name}/{version.version}"

    def log_config(self, config: Config) -> None:
        self.log_params(flatten(config.to_dict()))
        self.log_text(config.to_yaml(), "config.yaml")

    def set_description(self, markdown: str) -> None:
        """The run's description, shown (as Markdown) on its page in the MLflow UI."""
        self.client.set_tag(self.run_id, DESCRIPTION_TAG, markdown)

    def log_dataset(self, output, context: str = "training") -> None:
        """Record a published store output (e.g. the shards) as an MLflow dataset input of this run:
        named by its dataset.json (source and resolution) when it has one, its URI as the source,
        a digest of the file checksums in its manifest, and dataset.json as the profile."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        info = output.read_json("dataset.json") if output.exists("dataset.json") else {}
        name = f"{info['source']}-{info['resolution']}px" if {"source", "resolution"} <= set(info) else output.stage
        scheme = output.uri.split("://", 1)[0] if "://" in output.uri else "file"
        dataset = Dataset(name=name, digest=manifest_digest(output.manifest)[:DATASET_DIGEST_CHARS],
                          source_type="local" if scheme == "file" else scheme,
                          source=json.dumps({"uri": output.uri}),
                          profile=json.dumps({**info, "store_key": output.key}, sort_keys=True))
        self.client.log_inputs(self.run_id, [DatasetInput(dataset, [InputTag("mlflow.data.context", context)])])


def manifest_digest(manifest: dict) -> str:
    """sha256 over a store manifest's (path, sha256) pairs: the content of an output, whatever its
    key, timestamps or where it lies."""
    lines = sorted(f"{f['path']}\t{f['sha256']}\n" for f in manifest.get("files", []))
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def safe_key(name: str) -> str:
    """An MLflow-legal key: `train_diffusion[p_uncond=0.1]` -> `train_diffusion:p_uncond:0.1`."""
    name = name.replace("]", "")
    return re.sub(r"[^A-Za-z0-9_\-. :/]", ":", name)


def _param_value(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."
