# Turns tests/sql/citus_emulation.sql (a script that runs in its own BEGIN ... COMMIT) into
# the citus extension's script: CREATE EXTENSION runs its script inside the caller's
# transaction, where transaction control is not allowed. Only the two top-level lines go; the
# file's other uses (the Rust and Python test harnesses) keep running it as it is.
BEGIN {
    print "-- Generated from tests/sql/citus_emulation.sql by tests/citus_stub: do not edit."
    print "\\echo Use \"CREATE EXTENSION citus\" to load this file. \\quit"
}
/^BEGIN;[[:space:]]*$/ { begins++; next }
/^COMMIT;[[:space:]]*$/ { commits++; next }
{ print }
END {
    if (begins != 1 || commits != 1) {
        printf "extension_sql.awk: expected one top-level BEGIN; and one COMMIT; in %s, found %d and %d\n", FILENAME, begins, commits > "/dev/stderr"
        exit 1
    }
}
