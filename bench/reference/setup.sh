#!/usr/bin/env bash
# Makes the virtualenv the reference benchmark runs in: Patroni 4.1.5 from PyPI, nothing else
# of note. No database, DCS or network but PyPI is needed, now or when the benchmark runs.
#
# Usage: bash bench/reference/setup.sh [VENV_DIR]   (default: target/reference-venv)
# PYTHON picks the interpreter (default python3); the figures in BENCHMARKS.md were taken
# with CPython 3.11.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${1:-$root/target/reference-venv}"
python="${PYTHON:-python3}"

"$python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || echo "setup.sh: note: BENCHMARKS.md's reference figures were taken with CPython 3.11;" \
          "$("$python" -V 2>&1) will give other absolute times" >&2

# Never delete something that is not a virtualenv we could have made.
if [ -e "$venv" ] && [ ! -f "$venv/pyvenv.cfg" ]; then
  echo "setup.sh: $venv exists and is not a virtualenv; refusing to replace it" >&2
  exit 1
fi
rm -rf "$venv"
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$here/requirements.txt"

# Fail here, not halfway through a run, if the handler moved or the version is not the one pinned.
"$venv/bin/python" - <<'PY'
from patroni.postgresql.mpp.citus import CitusHandler, PgDistGroup, PgDistNode, PgDistTask  # noqa: F401
from patroni.version import __version__

assert __version__ == "4.1.5", f"expected Patroni 4.1.5, got {__version__}"
print(f"reference ready: Patroni {__version__}")
PY
echo "run: PYTHONHASHSEED=0 $venv/bin/python $here/bench_patroni.py --quick"
