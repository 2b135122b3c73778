# syntax=docker/dockerfile:1
#
# The agentmesh node image: docker build -t agentmesh:0.1.0 .   (docs/deploy.md)
#
# Honest with `make test`: `make venv` installs `-c requirements.lock -e '.[dev]'`; the builder below
# installs the same project with the same constraint file, requirements.lock, without the [dev] extra. So
# every runtime package in the image has exactly the version the tests ran with, and no test or lint tool
# is in it. Two guards keep it that way: the build fails if pip installed anything the lock does not pin
# (a dependency added to pyproject.toml without `make lock`), and tests/deploy/test_image_deps.py checks
# the same from the test venv in `make test`. Only binary wheels are installed (--only-binary=:all:), so no
# compiler is needed here, and none is in the final image, which gets the finished virtualenv alone.

# Both stages must use the same Python: the virtualenv's interpreter links to the base image's.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY agentmesh ./agentmesh
# pip and setuptools leave the virtualenv at the end: nothing installs into it at run time.
RUN python -m venv /opt/agentmesh \
    && python -m pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/agentmesh/bin/pip install --only-binary=:all: --constraint requirements.lock /tmp/wheels/agentmesh-*.whl \
    && /opt/agentmesh/bin/pip freeze --exclude agentmesh >/tmp/installed.txt \
    && if grep -vxFf requirements.lock /tmp/installed.txt; then \
        echo "ERROR: the packages above are not pinned by requirements.lock: run 'make lock'" >&2; exit 1; \
    fi \
    && /opt/agentmesh/bin/pip uninstall --yes pip setuptools

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agentmesh" \
      org.opencontainers.image.description="A routing mesh for AI agents built on BGP's ideas" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric id, so that Kubernetes' runAsNonRoot can check it and fsGroup can match it.
RUN groupadd --system --gid 10001 agentmesh \
    && useradd --system --uid 10001 --gid agentmesh --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin agentmesh
COPY --from=builder /opt/agentmesh /opt/agentmesh
COPY deploy/image/node.yaml /etc/agentmesh/node.yaml
ENV PATH=/opt/agentmesh/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# Peering and forwarding (node.listen), MCP (mcp.listen), metrics (metrics.listen) of the default config.
# The admin API stays on the container's loopback (127.0.0.1:50050): docker exec CONTAINER agentmesh peers.
EXPOSE 7000 8080 9464
# The node's readiness (gRPC health service "") on the peering port, in a plaintext config. There is no
# grpc_health_probe in the image; grpc's own health stub does the same. Kubernetes ignores HEALTHCHECK and
# uses the probes in deploy/base/statefulset.yaml. The start period covers timers.readiness_timeout (30 s).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os,sys,grpc;from grpc_health.v1 import health_pb2 as h,health_pb2_grpc as g;c=grpc.insecure_channel(os.environ.get('AGENTMESH_HEALTH_ADDRESS','127.0.0.1:7000'));s=g.HealthStub(c).Check(h.HealthCheckRequest(service=''),timeout=4).status;sys.exit(0 if s==h.HealthCheckResponse.SERVING else 1)"]
# The CLI is the entry point, so that the same image runs a node (the default command, exec form: the node
# is PID 1 and gets SIGTERM itself) and operator commands (docker run --rm agentmesh:0.1.0 --help).
ENTRYPOINT ["agentmesh"]
CMD ["serve", "--config", "/etc/agentmesh/node.yaml"]
