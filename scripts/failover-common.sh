# Sourced by scripts/failover.sh and scripts/redis-failover.sh: their step-by-step output, the
# compose command this machine has, and the tools both load runs need.
#   step TEXT   a numbered heading          say TEXT   a line under it
#   ok TEXT     a check that held           fail TEXT  a check that did not: exits 1
# Sets `compose` to `docker compose` or `docker-compose`; installs curl and wrk when missing.

step=0
step() { step=$((step + 1)); printf '\n== %d. %s\n' "$step" "$*"; }
say() { printf '   %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }
fail() { printf '   FAIL: %s\n' "$*" >&2; exit 1; }

if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
else
  fail "neither 'docker compose' nor 'docker-compose' is installed"
fi

for tool in curl wrk; do
  if ! command -v "$tool" >/dev/null; then
    say "installing $tool"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  fi
done
