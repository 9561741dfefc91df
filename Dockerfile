# edgevlm CPU image: ONNX Runtime serving, no torch in the final stage.
#   docker build -t edgevlm .
#   docker run -p 8080:8080 edgevlm                       # the embedded demo model
#   docker run -p 8080:8080 -v /models/glm-bundle:/bundle -e EDGEVLM_BUNDLE=/bundle edgevlm
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- stage 1: export the demo model to an ONNX bundle (needs torch) -------------------------
FROM ${PYTHON_IMAGE} AS export
WORKDIR /src
COPY . .
# The project itself is installed from its source tree (versions pinned in pyproject.toml).
# hadolint ignore=DL3013
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
    && pip install --no-cache-dir '.[export]' \
    && edgevlm export --model demo/model --out /opt/edgevlm/demo-bundle

# --- stage 2: serve (ONNX Runtime only) ------------------------------------------------------
FROM ${PYTHON_IMAGE} AS serve
WORKDIR /app
COPY . /tmp/src
RUN pip install --no-cache-dir /tmp/src && rm -rf /tmp/src \
    && useradd --create-home --uid 10001 edgevlm
COPY --from=export --chown=10001:10001 /opt/edgevlm/demo-bundle /opt/edgevlm/demo-bundle
USER 10001
ENV EDGEVLM_BUNDLE=/opt/edgevlm/demo-bundle \
    PYTHONUNBUFFERED=1
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
ENTRYPOINT ["edgevlm", "serve", "--host", "0.0.0.0", "--port", "8080"]
