# The edgefleet agent in a container (arm64 and amd64: python:3.11-slim is multi-arch).
#   docker build -f packaging/agent.Dockerfile -t edgefleet-agent .
#   docker run -d --name agent -v $PWD/bundle:/etc/edgefleet:ro -v edgefleet-state:/var/lib/edgefleet \
#       -v /run/edgefleet:/run/edgefleet edgefleet-agent
# The bundle is what `edgefleet devices register ID --profile P --out bundle` wrote; its data_dir is
# overridden to the state volume. Applications on the host reach the model on /run/edgefleet/serve.sock.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent agent
COPY common common
COPY profiles profiles
RUN python -m venv /opt/edgefleet/venv \
 && /opt/edgefleet/venv/bin/pip install --no-cache-dir --disable-pip-version-check ".[agent]"

FROM python:3.11-slim
COPY --from=build /opt/edgefleet/venv /opt/edgefleet/venv
COPY profiles /usr/share/edgefleet/profiles
RUN groupadd --system --gid 10001 edgefleet \
 && useradd --system --uid 10001 --gid edgefleet --home-dir /var/lib/edgefleet --shell /usr/sbin/nologin edgefleet \
 && mkdir -p /var/lib/edgefleet /run/edgefleet \
 && chown edgefleet:edgefleet /var/lib/edgefleet /run/edgefleet
ENV EDGEFLEET_PROFILES_DIR=/usr/share/edgefleet/profiles PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
USER edgefleet
VOLUME ["/var/lib/edgefleet"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/edgefleet/venv/bin/python", "-m", "agent", "--config", "/etc/edgefleet/agent.toml", \
            "--data-dir", "/var/lib/edgefleet", "--serve-socket", "/run/edgefleet/serve.sock"]
