"""The commented ``params.yml`` that ``swarmkeeper cloudconfig init`` writes.

It validates as written, with placeholders to replace: the discovery token, the repo URL and
the agent image. ``cloudconfig`` refuses to generate from them (each named at its line) unless
``--allow-placeholders``.
"""

from __future__ import annotations

from cloudconfig.params import DEFAULT_ETCD_IMAGE

PARAMS_TEMPLATE = f"""\
# swarmkeeper provisioning parameters: `swarmkeeper cloudconfig --params params.yml --out out/`
# writes manager.yml/worker.yml (#cloud-config, Flatcar) and manager.ign/worker.ign (Ignition,
# Flatcar or Fedora CoreOS). See docs/provisioning.md. Keep this file in git; it holds no
# secret unless you inline one (slack.webhook_url).

cluster:
  name: prod                # lowercase letters, digits and '-'
  managers: 3               # 1, 3 or 5: an odd number keeps etcd and swarm quorum

# How the managers' etcd members find each other, ONE of:
etcd:
  # a fresh discovery URL per cluster: `swarmkeeper cloudconfig discovery-url --size 3`
  discovery: https://discovery.etcd.io/replace-with-your-token
  # or the managers' fixed private addresses, one per manager:
  # static: [10.0.0.11, 10.0.0.12, 10.0.0.13]
  image: {DEFAULT_ETCD_IMAGE}   # stay on 3.5 while locksmith needs the v2 API
  # client_port: 2379
  # peer_port: 2380

# The state repo every agent follows.
repo:
  url: https://git.example.com/ops/cluster.git
  branch: main

agent:
  image: registry.example.com/swarmkeeper:0.1.0   # `make image`, then push it where nodes pull
  # runtime: docker         # or podman
  # log_level: info
  # extra_volumes: ["/srv/data:/srv/data"]   # host paths the state repo manages files in

prefix: /swarmkeeper        # etcd key prefix, the same as prefix in state/cluster.yaml

# os: flatcar               # or fcos (Fedora CoreOS: Ignition only, zincati updates)

# Reboots after OS updates: etcd-lock never reboots two managers at once (Flatcar locksmith
# groups; on Fedora CoreOS zincati's fleet_lock with a FleetLock server), or off.
# updates:
#   reboot_strategy: etcd-lock
#   fleet_lock_url: http://10.0.0.11:3333/   # required for fcos with etcd-lock

ssh_authorized_keys: []     # e.g. ["ssh-ed25519 AAAA... ops@example.com"], for user core

# Slack webhook for the agent's notifications: a file on the node holding the URL (put it
# there with your provider's secret tooling), or inline the URL (it then sits in user-data).
# slack:
#   webhook_url_file: /etc/swarmkeeper/slack-url
#   # webhook_url: https://hooks.slack.com/services/...

# Extra files for every node (or some roles): content inline, or source relative to this file.
# files:
#   - {{path: /etc/motd, content: "swarmkeeper node\\n", mode: "0644"}}
#   - {{path: /etc/ssl/certs/corp-ca.pem, source: corp-ca.pem, roles: [manager, worker]}}
"""
