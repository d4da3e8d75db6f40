"""The image the cluster files run is pinned and buildable: its tag is `<project version>-ray<Ray
version>`, and that Ray version is KubeRay's `rayVersion`, the Dockerfile's base image, inside the
pyproject pin and the Ray these tests run on. Docker cannot build here (no engine), so the
Dockerfile is checked statically and its COPY lines are replayed to build the project's wheel."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import ray
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parent.parent
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
DOCKERFILE = (REPO / "Dockerfile").read_text()
BASE = re.search(r"^FROM rayproject/ray:(?P<ray>\d+\.\d+\.\d+)-py(?P<py>\d)(?P<minor>\d+)-gpu$", DOCKERFILE, re.M)
IMAGE = "YOUR-REGISTRY/guided-diffusion"


def _ray_job() -> dict:
    return yaml.safe_load((REPO / "cluster/kuberay.yaml").read_text())


def _images() -> dict[str, list[str]]:
    """Every container image named in the cluster files, by file."""
    found = {}
    for path in sorted((REPO / "cluster").glob("*.yaml")):
        found[path.name] = re.findall(r"^\s*(?:-\s*)?image:\s*(\S+)", path.read_text(), re.M)
    return found


def test_the_dockerfile_starts_from_rays_gpu_image_for_the_projects_python():
    assert BASE, "Dockerfile: no `FROM rayproject/ray:<version>-py<XY>-gpu` line"
    python = f"{BASE['py']}.{BASE['minor']}"
    assert SpecifierSet(PROJECT["requires-python"]).contains(python + ".0")
    assert DOCKERFILE.count("\nFROM ") + DOCKERFILE.startswith("FROM ") == 1


def test_ray_versions_agree_everywhere():
    pin = next(Requirement(d) for d in PROJECT["dependencies"] if Requirement(d).name == "ray")
    ray_version = _ray_job()["spec"]["rayClusterSpec"]["rayVersion"]
    assert ray_version == BASE["ray"] == ray.__version__
    assert pin.specifier.contains(ray_version), f"rayVersion {ray_version} is outside pyproject's {pin}"


def test_the_project_image_is_tagged_with_the_project_and_ray_versions():
    tag = f"{PROJECT['version']}-ray{BASE['ray']}"
    images = _images()
    ours = [image for found in images.values() for image in found if image.startswith(IMAGE)]
    assert ours and set(ours) == {f"{IMAGE}:{tag}"}, ours
    assert yaml.safe_load((REPO / "cluster/gpu.yaml").read_text())["docker"]["image"] == f"{IMAGE}:{tag}"
    for name in ("kuberay.yaml", "kuberay-mlflow.yaml"):
        assert images[name] and set(images[name]) == {f"{IMAGE}:{tag}"}, name
    assert f'org.opencontainers.image.version="{PROJECT["version"]}"' in DOCKERFILE
    assert f"-t {IMAGE}:{tag} ." in DOCKERFILE  # the build command in its header


def test_no_image_floats():
    for name, found in _images().items():
        for image in found:
            repo, _, tag = image.rpartition(":")
            assert repo and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), (name, image)


def test_the_image_installs_the_project_with_the_postgres_driver():
    assert re.search(r'^RUN pip install --no-cache-dir "\.\[postgres\]"$', DOCKERFILE, re.M)
    assert "postgres" in PROJECT["optional-dependencies"]
    assert re.search(r"^WORKDIR /app$", DOCKERFILE, re.M)
    assert "ENV PIPELINE_GIT_COMMIT=${GIT_COMMIT}" in DOCKERFILE  # runs record the commit of the image


def _copies() -> list[str]:
    """The sources of the Dockerfile's COPY lines (all into WORKDIR /app, under their own names)."""
    sources = []
    for line in re.findall(r"^COPY (.+)$", DOCKERFILE, re.M):
        words = [w for w in line.split() if not w.startswith("--")]
        *srcs, dest = words
        assert dest == "./" or (len(srcs) == 1 and dest == f"./{srcs[0]}"), f"COPY to another name: {line}"
        sources += srcs
    return sources


def test_the_build_context_keeps_what_the_image_copies():
    ignored = [p.strip() for p in (REPO / ".dockerignore").read_text().splitlines()
               if p.strip() and not p.startswith("#")]
    for heavy in (".git", ".venv", "runs", "mlruns", "tests"):
        assert heavy in ignored
    assert not set(_copies()) & set(ignored)


def test_the_copied_files_build_the_project_and_hold_the_jobs_config(tmp_path):
    app = tmp_path / "app"
    app.mkdir()
    for source in _copies():
        src = REPO / source
        if src.is_dir():
            shutil.copytree(src, app / source, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, app / source)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                            "--wheel-dir", str(tmp_path / "dist"), str(app)],
                           capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("pipeline/run.py", "pipeline/tracking.py", "pipeline/data/__init__.py", "stages/sweep.py"):
        assert module in names
    entry = _ray_job()["spec"]["entrypoint"]
    config = re.search(r"--config (\S+)", entry)[1]
    assert entry.startswith("cd /app && ") and (app / config).is_file()
    reported = yaml.safe_load((app / config).read_text())["sweep"]["reported"]  # a glob of published-row files
    assert sorted(app.glob(reported)), reported
