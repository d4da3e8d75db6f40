"""A sample stage killed (SIGKILL, whole process group) mid-run resumes from its finished chunks,
and the published images are those of an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import REPO, isolated_overrides
from tests.generation.test_stages import STAGES, _output

KILL_SMALL = ["--set", "train.p_uncond=[0.1]", "--set", "sample.num_images=48", "--set", "sample.steps=25",
              "--set", "sample.chunk_size=4", "--set", "sample.batch_size=4", "--set", "sample.num_actors=1",
              "--set", "sample.guidance=pag"]
DRIVER = "import sys; from pipeline.run import main; sys.exit(main(sys.argv[1:], stage_modules={stages!r}))"


@pytest.mark.slow
def test_killed_sample_stage_resumes_from_its_chunks(run_pipeline, workdir):
    assert run_pipeline("--stages", "train_diffusion", *KILL_SMALL, stage_modules=STAGES) == 0
    args = [*isolated_overrides(workdir), "--stages", "sample", *KILL_SMALL]
    proc = subprocess.Popen([sys.executable, "-c", DRIVER.format(stages=STAGES), *args], cwd=workdir,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stage_dir = workdir / "runs" / "sample"
    deadline = time.time() + 240
    try:
        while time.time() < deadline and proc.poll() is None:
            partials = list(stage_dir.glob("*.partial")) if stage_dir.exists() else []
            if partials and len(list(partials[0].glob("chunk_*.npz"))) >= 2:
                break
            time.sleep(0.2)
        assert proc.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver, its Ray instance and the actor
        proc.wait()
    [partial] = list(stage_dir.glob("*.partial"))
    finished = len(list(partial.glob("chunk_*.npz")))
    assert 2 <= finished < 12

    assert run_pipeline("--stages", "sample", *KILL_SMALL, stage_modules=STAGES) == 0
    out = _output(workdir, "sample")
    summary = json.loads((out / "_MANIFEST.json").read_text())["summary"]
    assert summary["reused_chunks"] >= finished and summary["generated_images"] <= 48 - 4 * finished

    from pipeline.generation import SamplerConfig, generate, iter_chunks, load_models, plan_chunks
    from pipeline.store import Directory, resolve

    info = json.loads((out / "samples.json").read_text())
    trial = SamplerConfig.from_dict(info["config"])
    images = np.concatenate([c[0] for c in iter_chunks(Directory(*resolve(str(out)), str(out)), plan_chunks(48, 4))])
    fresh, _ = generate(trial, load_models(trial, info["model"]["uri"]), range(48), batch_size=16)
    assert np.array_equal(images, fresh)
