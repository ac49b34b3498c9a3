# Cross-compile and test image for qgnn-deploy: the aarch64 cross toolchain, qemu-user, the pinned
# Python packages and the cached aarch64 test sysroot.  All the work is done by export/setup.sh, the
# same script CI runs directly on its machine (no Docker engine there), so this file stays thin.
#
# Build (networked; plain torch wheels on x86-64 Linux pull CUDA libraries, so pass the URL of a
# CPU-only torch wheel index if you have one -- it is added as an extra pip index, nothing by default):
#   docker build -t qgnn-deploy .
#   docker build --build-arg TORCH_INDEX_URL=<cpu-wheel-index-url> -t qgnn-deploy .
#
# Use, with your trained model in ./models (outputs land next to it):
#   docker run --rm -v $PWD/models:/work qgnn-deploy qgnn-export /work/model.pt --target arm64 --out /work/art
#   docker run --rm -v $PWD/models:/work qgnn-deploy \
#       python3 /opt/qgnn-deploy/runtimes/qgnn_bench.py /work/art --backend onnx     # x86-64 host timings
#   docker run --rm -v $PWD/models:/work qgnn-deploy \
#       /opt/qgnn-cache/a64/bin/a64python /opt/qgnn-deploy/runtimes/qgnn_bench.py /work/art  # qemu, EMULATED
#   docker run --rm qgnn-deploy bash /opt/qgnn-deploy/export/run.sh test    # the test suite
FROM python:3.11-slim-bookworm

# Only what export/setup.sh needs to start; it installs the rest (apt packages, pip pins, sysroot).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends bash ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ARG TORCH_INDEX_URL
ENV QGNN_CACHE=/opt/qgnn-cache \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

WORKDIR /opt/qgnn-deploy
COPY . .
RUN if [ -n "${TORCH_INDEX_URL:-}" ]; then export PIP_EXTRA_INDEX_URL="$TORCH_INDEX_URL"; fi \
 && bash export/setup.sh \
 && rm -rf /var/lib/apt/lists/* "$QGNN_CACHE/a64/debs"

WORKDIR /work
CMD ["qgnn", "--help"]
