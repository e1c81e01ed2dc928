#!/usr/bin/env bash
# Installs the citus-ha stand-in for the Citus extension into a PostgreSQL installation
# (PG_CONFIG, default PostgreSQL 15's): citus.so (does nothing, so that
# shared_preload_libraries = 'citus' loads), citus.control and the SQL script generated from
# tests/sql/citus_emulation.sql. A real Citus (a citus.so without this stub's marker) is left
# alone. Needs write access to the server's directories (root) and postgresql-server-dev.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
pg_config="${PG_CONFIG:-/usr/lib/postgresql/15/bin/pg_config}"
libdir="$("$pg_config" --pkglibdir)"
marker="citus-ha-citus-stub"

if [ -e "$libdir/citus.so" ] && ! grep -qa "$marker" "$libdir/citus.so"; then
  echo "citus_stub: real Citus is installed in $libdir; leaving it alone" >&2
  exit 0
fi

build="$(mktemp -d)"
trap 'rm -rf "$build"' EXIT
cp "$here/citus.c" "$here/citus.control" "$here/Makefile" "$here/extension_sql.awk" "$build/"
cp "$here/../sql/citus_emulation.sql" "$build/"
# with_llvm=no: no JIT bitcode for a library without code worth compiling.
make -s -C "$build" PG_CONFIG="$pg_config" with_llvm=no install >/dev/null
grep -qa "$marker" "$libdir/citus.so"
