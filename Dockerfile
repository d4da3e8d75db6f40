# The pipeline's image for the cluster files (cluster/kuberay*.yaml, cluster/gpu.yaml): Ray's GPU
# image with this project installed and its code in /app. Tag it with the project's version and
# Ray's, as the cluster files do (tests/test_cluster_yaml.py checks that they agree):
#
#   docker build --build-arg GIT_COMMIT="$(git rev-parse HEAD)" \
#       -t YOUR-REGISTRY/guided-diffusion:0.1.0-ray2.60.0 .
#   docker push YOUR-REGISTRY/guided-diffusion:0.1.0-ray2.60.0
FROM rayproject/ray:2.60.0-py311-gpu

# /app belongs to the image's `ray` user, who installs into the image's Python.
USER root
RUN mkdir -p /app && chown ray:users /app
USER ray
WORKDIR /app

COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users pipeline ./pipeline
COPY --chown=ray:users stages ./stages
COPY --chown=ray:users configs ./configs
# The project and its pinned dependencies (Ray stays the base image's: the pin allows only 2.60.x),
# with the PostgreSQL driver the MLflow server needs.
RUN pip install --no-cache-dir ".[postgres]"

# One copy of the code: Ray workers and the MLflow server import /app too, with configs/ beside it.
ENV PYTHONPATH=/app
# MLflow records the commit a run's code came from; the image has no .git, so it is built in.
ARG GIT_COMMIT=unknown
ENV PIPELINE_GIT_COMMIT=${GIT_COMMIT}
LABEL org.opencontainers.image.title="guided-diffusion" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
