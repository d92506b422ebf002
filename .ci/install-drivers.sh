#!/usr/bin/env bash
# Installs the real PostgreSQL drivers that tests/integration/drivers.rs runs through shardgate:
# psycopg 3 and asyncpg (PyPI), node-postgres (npm, from the committed package-lock.json), and a
# JDK with the PostgreSQL JDBC driver (Debian). Idempotent: safe to run on every CI run.
set -euo pipefail

cd "$(dirname "$0")/.."

PSYCOPG_VERSION=3.3.9
ASYNCPG_VERSION=0.32.0

need_apt=()
command -v javac >/dev/null 2>&1 || need_apt+=(default-jdk-headless)
[ -f /usr/share/java/postgresql.jar ] || need_apt+=(libpostgresql-jdbc-java)
command -v node >/dev/null 2>&1 || need_apt+=(nodejs)
command -v npm >/dev/null 2>&1 || need_apt+=(npm)
command -v python3 >/dev/null 2>&1 || need_apt+=(python3 python3-pip)
if [ ${#need_apt[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

# The Python the tests run is the first python3 on PATH (DRIVERS_PYTHON overrides it).
PY="${DRIVERS_PYTHON:-python3}"
if ! "$PY" -c "import psycopg, asyncpg, sys
sys.exit(0 if (psycopg.__version__, asyncpg.__version__) == ('$PSYCOPG_VERSION', '$ASYNCPG_VERSION') else 1)" >/dev/null 2>&1; then
    # Debian's own python3 is "externally managed"; a pyenv/venv python is not.
    "$PY" -m pip install --quiet --disable-pip-version-check \
        "psycopg[binary]==$PSYCOPG_VERSION" "asyncpg==$ASYNCPG_VERSION" \
        || "$PY" -m pip install --quiet --disable-pip-version-check --break-system-packages \
        "psycopg[binary]==$PSYCOPG_VERSION" "asyncpg==$ASYNCPG_VERSION"
fi

(cd tests/drivers/node && npm ci --no-audit --no-fund --loglevel=error)

echo "drivers: python $("$PY" -c 'import psycopg, asyncpg; print("psycopg", psycopg.__version__, "asyncpg", asyncpg.__version__)'), node $(node --version) pg $(node -p 'require("./tests/drivers/node/node_modules/pg/package.json").version'), $(javac -version 2>&1), jdbc $(ls /usr/share/java/postgresql.jar)"
