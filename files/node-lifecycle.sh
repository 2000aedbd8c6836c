#!/bin/sh
# Announces this node under <prefix>/lifecycle/<node> on a 30 s lease and keeps it alive, so
# operators see nodes come and go even when the agent itself is down.
set -eu
. /etc/swarmkeeper/node.env
key="${SWARMKEEPER_PREFIX}/lifecycle/${SWARMKEEPER_NODE}"
export ETCDCTL_API=3
while true; do
  lease=$(docker run --rm --net host "${ETCD_IMAGE}" etcdctl --endpoints="${ETCD_ENDPOINTS}" \
    lease grant 30 | awk '{print $2}')
  docker run --rm --net host "${ETCD_IMAGE}" etcdctl --endpoints="${ETCD_ENDPOINTS}" \
    put --lease="$lease" "$key" "{\"address\":\"${PRIVATE_IPV4}\",\"role\":\"${SWARMKEEPER_ROLE}\"}"
  docker run --rm --net host "${ETCD_IMAGE}" etcdctl --endpoints="${ETCD_ENDPOINTS}" \
    lease keep-alive "$lease" || sleep 5
done
