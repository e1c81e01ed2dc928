"""The suite's own parts that need no cluster: reading PostgreSQL's log, and the citus
stub's extension script made from the emulation. These always run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from .pglog import read_pg_log

ROOT = Path(__file__).resolve().parents[3]
STUB = ROOT / "tests" / "citus_stub"

H = "2026-12-01 17:00:{} UTC [8818] db=citus app=Patroni citus: "
UPDATE = "SELECT pg_catalog.citus_update_node($1, $2, $3, true, $4)"
PARAMS = "parameters: $1 = '1', $2 = '127.0.0.1-demoted', $3 = '49541', $4 = '10000'"
LOG = "\n".join([
    H.format("10.190") + "LOG:  duration: 0.030 ms  statement: BEGIN",
    H.format("10.190") + f"LOG:  duration: 0.050 ms  bind <unnamed>: {UPDATE}",
    H.format("10.190") + f"DETAIL:  {PARAMS}",
    H.format("10.198") + f"LOG:  duration: 7.797 ms  execute <unnamed>: {UPDATE}",
    H.format("10.198") + f"DETAIL:  {PARAMS}",
    "2026-12-01 17:00:11.072 UTC [5282] db= app=: FATAL:  could not send end-of-streaming "
    "message to primary: server closed the connection unexpectedly",
    "\t\tThis probably means the server terminated abnormally",
    "2026-12-01 17:00:12.136 UTC [5272] db= app=: LOG:  received fast shutdown request",
]) + "\n"


def test_pg_log_entries_carry_their_statement_parameters_and_time(tmp_path: Path) -> None:
    path = tmp_path / "postgresql.log"
    path.write_text(LOG)
    entries = read_pg_log(path)
    assert [e.level for e in entries] == ["LOG", "LOG", "LOG", "FATAL", "LOG"]
    begin, bind, execute, fatal, shutdown = entries
    assert (begin.sql, begin.pid, begin.db, begin.app) == ("BEGIN", 8818, "citus",
                                                           "Patroni citus")
    assert bind.sql is None, "only finished statements and executes count"
    assert execute.sql == UPDATE
    assert "'127.0.0.1-demoted'" in execute.detail and "-demoted" in execute.text
    assert round(execute.at - begin.at, 3) == 0.008
    assert fatal.app == "" and fatal.sql is None
    assert shutdown.msg == "received fast shutdown request"
    assert shutdown.at == pytest.approx(1796144412.136)


def _generate(sql: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["awk", "-f", str(STUB / "extension_sql.awk"), str(sql)],
                          capture_output=True, text=True)


def test_the_stub_script_is_the_emulation_without_its_transaction() -> None:
    emulation = ROOT / "tests" / "sql" / "citus_emulation.sql"
    out = _generate(emulation)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].startswith("\\echo Use \"CREATE EXTENSION citus\"")
    assert "BEGIN;" not in lines and "COMMIT;" not in lines
    original = emulation.read_text().splitlines()
    assert lines[2:] == [line for line in original if line not in ("BEGIN;", "COMMIT;")]


def test_the_stub_script_refuses_a_file_whose_transaction_it_cannot_find(tmp_path: Path) -> None:
    sql = tmp_path / "x.sql"
    sql.write_text("SELECT 1;\nCOMMIT;\n")
    out = _generate(sql)
    assert out.returncode != 0
    assert "expected one top-level BEGIN; and one COMMIT;" in out.stderr
