# The swarmkeeper agent image. Build it with `make image` (scripts/build-image.sh), which
# prepares the wheelhouse this file installs from; see docs/provisioning.md for both bases.
#
#   BASE=python:3.11-slim-bookworm   from a registry (default)
#   BASE=swarmkeeper-base:bookworm   a debootstrap'ed Debian bookworm imported locally
#
# The image runs as an unprivileged user by default (swarmkeeper, uid 10001): `docker run IMAGE
# swarmkeeper validate ...` needs nothing more. The node's agent unit runs it with --user 0:0
# because it manages systemd over the host's system bus and writes /etc/systemd/system, which
# only root may do; with the docker socket mounted it is root-equivalent on the host anyway.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}
ARG VERSION=0.1.0

# git (the fallback source: fetch and archive), ssh-keygen and gpg (git verifies signed
# commits with them, artifacts included), CA certificates for https remotes; the local base
# already has them all, so the build needs no network there.
RUN set -eu; \
    if ! command -v git >/dev/null || ! command -v ssh-keygen >/dev/null || ! command -v gpg >/dev/null \
       || [ ! -s /etc/ssl/certs/ca-certificates.crt ]; then \
      apt-get update; \
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends git ca-certificates openssh-client gnupg; \
      rm -rf /var/lib/apt/lists/*; \
    fi

COPY wheels/ /tmp/wheels/
COPY constraints.txt /tmp/constraints.txt
# Exactly the pinned versions, from the wheelhouse only (no index is consulted).
RUN python3 -m venv /opt/swarmkeeper \
    && /opt/swarmkeeper/bin/pip install --no-cache-dir --no-index --find-links /tmp/wheels \
       -c /tmp/constraints.txt "swarmkeeper==${VERSION}" \
    && rm -rf /tmp/wheels /tmp/constraints.txt \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/swarmkeeper \
       --no-create-home --shell /usr/sbin/nologin swarmkeeper

COPY docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/opt/swarmkeeper/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
LABEL org.opencontainers.image.title="swarmkeeper" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.description="GitOps agent for the hosts of a Docker Swarm cluster"
USER 10001:10001
WORKDIR /var/lib/swarmkeeper
ENTRYPOINT ["/usr/local/bin/docker-entrypoint.sh"]
CMD ["--help"]
