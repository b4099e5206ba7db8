# ML-PulseChecker: a slim, scikit-learn-free prediction server.
#
#   docker build -t ml-pulsechecker .                       # simulate, train and export inside the build
#   docker build --build-arg MODEL_DIR=artifacts -t ml-pulsechecker .   # or bake a model you exported
#   docker run -p 8000:8000 ml-pulsechecker                 # then http://127.0.0.1:8000/docs
#
# The base is a build argument so air-gapped builders can use a local Python image.
ARG PYTHON_IMAGE=python:3.12-slim

# --- 1. model: the train extra, used only to produce model.onnx ------------------------------------------
FROM ${PYTHON_IMAGE} AS model
ARG MODEL_DIR=""
ARG USERS=5000
ARG SEED=7
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MPLBACKEND=Agg PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY . .
RUN if [ -n "$MODEL_DIR" ]; then \
        mkdir -p /out && cp "$MODEL_DIR/model.onnx" "$MODEL_DIR/model.onnx.sha256" /out/; \
    else \
        pip install '.[train]' \
        && python -m train simulate --users "$USERS" --days 90 --seed "$SEED" --out data/events.parquet \
        && python -m train fit --events data/events.parquet --out artifacts --assets /tmp/assets \
               --session-col session_id --revenue-col revenue --seed "$SEED" \
        && python -m export --artifacts artifacts \
        && mkdir -p /out && cp artifacts/model.onnx artifacts/model.onnx.sha256 /out/; \
    fi \
    && chmod 644 /out/* && cd /out && sha256sum -c model.onnx.sha256

# --- 2. deps: the pinned serve dependencies in a venv, trimmed of what the server never loads ------------
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY server/requirements.lock /tmp/requirements.lock
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile -r /tmp/requirements.lock \
    && /opt/venv/bin/pip uninstall -y pip setuptools \
    && cd /opt/venv/lib/python3*/site-packages \
    && rm -rf onnxruntime/transformers onnxruntime/quantization onnxruntime/tools numpy/f2py numpy/*/tests \
              numpy/tests swagger_ui_bundle/vendor/*/*.map \
    && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# --- 3. runtime: Python, the venv, the server code and the model. Nothing else. --------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PULSE_MODEL_PATH=/models/model.onnx \
    PULSE_HOST=0.0.0.0 \
    PULSE_PORT=8000 \
    PULSE_WORKERS=1
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin pulse
WORKDIR /app
COPY --from=deps /opt/venv /opt/venv
COPY common/ /app/common/
COPY server/ /app/server/
COPY --from=model /out/ /models/
USER 10001
EXPOSE 8000
# No curl in the image: Python asks /health itself.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-m", "server.ops.healthcheck"]
# A mounted model replaces the baked one: -v /path/dir:/models:ro, or PULSE_MODEL_PATH=/elsewhere/model.onnx.
CMD ["python", "-m", "server"]
