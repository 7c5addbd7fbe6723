# The edgefleet controller (REST API + fleet service) with its broker in one image.
#   docker build -f packaging/controller.Dockerfile -t edgefleet-controller .
#   docker run -d -p 8080:8080 -p 8883:8883 -v edgefleet-ws:/var/lib/edgefleet \
#       -e EDGEFLEET_API_KEYS="$(edgefleet apikey ops | sed -n 's/^entry.*: //p')" \
#       -e EDGEFLEET_BROKER_PUBLIC_HOST=controller.example.org edgefleet-controller
# The entrypoint (packaging/controller-entrypoint.sh) starts `edgefleet broker` (mosquitto as user
# mosquitto, TLS on 8883 with the controller's CA), then the controller as user edgefleet.
FROM python:3.11-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends mosquitto tini \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY agent agent
COPY common common
COPY controller controller
COPY profiles profiles
# torch first and pinned to the CPU build (an unpinned torch pulls a multi-GB CUDA build)
RUN pip install --no-cache-dir --disable-pip-version-check torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir --disable-pip-version-check ".[controller]"
RUN useradd --system --uid 10001 --home-dir /var/lib/edgefleet --shell /usr/sbin/nologin edgefleet \
 && mkdir -p /var/lib/edgefleet && chown edgefleet /var/lib/edgefleet && chmod 0755 /var/lib/edgefleet
ENV COMPRESSION_WORKSPACE=/var/lib/edgefleet/workspace \
    EDGEFLEET_BROKER_DIR=/var/lib/edgefleet/broker \
    EDGEFLEET_BROKER_HOST=127.0.0.1 EDGEFLEET_BROKER_PORT=1883 EDGEFLEET_BROKER_TLS_PORT=8883 \
    EDGEFLEET_API_HOST=0.0.0.0 EDGEFLEET_API_PORT=8080 \
    EDGEFLEET_PROFILES_DIR=/src/profiles PYTHONUNBUFFERED=1
VOLUME ["/var/lib/edgefleet"]
EXPOSE 8080 8883
COPY packaging/controller-entrypoint.sh /usr/local/bin/edgefleet-entrypoint
# root only long enough to hand the broker its folder (mosquitto drops to its account) and
# the controller its password; the controller itself runs as `edgefleet`
ENTRYPOINT ["tini", "--", "/usr/local/bin/edgefleet-entrypoint"]
