# spul serve on CPU: one frozen base model, unlearning artifacts applied per API key (docs/serving.md).
#
#   docker build -t spul-serve .
#   docker run --rm -p 8000:8000 -v "$PWD/models:/models:ro" -v "$PWD/runs:/runs:ro" -v "$PWD/keys.yaml:/keys.yaml:ro" \
#       spul-serve --model /models/base --artifact people=/runs/quickstart/artifact --keys /keys.yaml
#
# CUDA: the same file with CUDA wheels of torch (they bundle the CUDA runtime; the host needs the NVIDIA driver
# and the NVIDIA Container Toolkit):
#   docker build --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t spul-serve:cuda .
#   docker run --rm --gpus all -p 8000:8000 ... spul-serve:cuda --model /models/base --device cuda ...
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/spul/.cache/huggingface TOKENIZERS_PARALLELISM=false

RUN useradd --create-home --uid 1000 spul
WORKDIR /opt/spul
# torch first, from the chosen index (CPU by default), pinned: never an unpinned torch
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[serve]"

USER spul
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"
# listen on all interfaces inside the container; publish the port with -p (keys still decide every policy)
ENTRYPOINT ["spul", "serve", "--host", "0.0.0.0", "--port", "8000"]
CMD ["--help"]
