#!/usr/bin/env bash
# Run benches/peers.py with DuckDB and Polars from a virtualenv it creates on first use
# (KARTOTEKA_BENCH_VENV, default /var/tmp/kartoteka-bench-venv). Usage: peers.sh queries.json
set -euo pipefail
venv="${KARTOTEKA_BENCH_VENV:-/var/tmp/kartoteka-bench-venv}"
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import duckdb, polars' 2>/dev/null; then
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q duckdb polars pyarrow >&2
fi
exec "$venv/bin/python" "$(dirname "$0")/peers.py" "$1"
