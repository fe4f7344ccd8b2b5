#!/usr/bin/env bash
# Installs the PostgreSQL server binaries (Debian's packages) that the
# storage tests start their own throw-away servers with, unless they are
# there already. The tests never use a system-wide server.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || command -v initdb >/dev/null; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "hack/install-postgres.sh: PostgreSQL's initdb is missing; install it (apt-get install postgresql) or run this as root" >&2
  exit 1
fi
echo "hack/install-postgres.sh: installing PostgreSQL from Debian's packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The package may start a system-wide server; the tests do not need it.
if command -v pg_lsclusters >/dev/null; then
  pg_lsclusters --no-header | awk '{print $1, $2}' | while read -r version cluster; do
    pg_ctlcluster "$version" "$cluster" stop 2>/dev/null || true
  done
fi
