#!/usr/bin/env bash
# Writes .env for docker-compose.yml from .env.example, with a fresh random SESSION_KEY
# (64 bytes, hex) and LB_ADMIN_TOKEN (32 bytes, hex). Refuses to replace an existing .env:
# a new key would log out every session that nodes started with the old one.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -e .env ]; then
  echo "gen-env: .env exists, left unchanged (delete it first to generate new secrets)" >&2
  exit 0
fi

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

umask 077
sed -e "s/^SESSION_KEY=\$/SESSION_KEY=$(random_hex 64)/" \
    -e "s/^LB_ADMIN_TOKEN=\$/LB_ADMIN_TOKEN=$(random_hex 32)/" \
    .env.example > .env
echo "gen-env: wrote .env with a new SESSION_KEY and LB_ADMIN_TOKEN" >&2
