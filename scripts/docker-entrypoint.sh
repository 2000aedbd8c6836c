#!/bin/sh
# Entry point of the swarmkeeper image: `docker run IMAGE agent --config F` and
# `docker run IMAGE --version` run swarmkeeper with those arguments; `docker run IMAGE
# swarmkeeper --version` or any other program on PATH (sh, python3) runs that program.
set -e
if [ "$#" -eq 0 ]; then set -- --help; fi
case $1 in
  -*) exec swarmkeeper "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then exec "$@"; fi
exec swarmkeeper "$@"
