"""The capture under failure: killed at random moments, racing writes during the backfill,
and each bad situation refused or survived with a clear message."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import psycopg2
import pytest

from sophia_assets.flow.source import SourceError
from tests.support.cdc import (
    COLLECTION,
    DOCUMENTS_DDL,
    catalog_copy,
    drop_database,
    duplicated_changes,
    load,
    new_database,
    reduced_state,
    runner,
    source_state,
    sql,
)
from tests.support.cdc import (
    flow_process as _serve,
)
from tests.support.postgres import embedded

pytestmark = pytest.mark.slow


class Workload(threading.Thread):
    """Random application writes until stopped: single and multi-row transactions, updates
    of large bodies and of titles only, deletes, and rolled-back transactions."""

    def __init__(self, url: str, seed: int, first_id: int = 1, ids: int = 400):
        super().__init__(daemon=True)
        self.url, self.rng, self.first_id, self.ids = url, random.Random(seed), first_id, ids
        self.halt = threading.Event()
        self.transactions = 0

    def run(self) -> None:
        conn = psycopg2.connect(self.url)
        while not self.halt.is_set():
            with conn.cursor() as cur:
                for _ in range(self.rng.choice([1, 1, 1, 3, 8])):
                    self._change(cur)
            if self.rng.random() < 0.1:
                conn.rollback()
            else:
                conn.commit()
                self.transactions += 1
        conn.close()

    def _change(self, cur) -> None:
        key = self.rng.randint(self.first_id, self.first_id + self.ids)
        kind = self.rng.random()
        if kind < 0.45:
            cur.execute(
                "INSERT INTO documents (id, title, body) VALUES (%s, %s, %s) ON CONFLICT "
                "(id) DO UPDATE SET body = EXCLUDED.body",
                (key, f"t{key}", f"body {self.rng.random()}"),
            )
        elif kind < 0.55:
            body = os.urandom(4_000).hex()  # 8 kB, incompressible: stored as TOAST
            cur.execute("UPDATE documents SET body = %s WHERE id = %s", (body, key))
        elif kind < 0.8:
            cur.execute(
                "UPDATE documents SET title = %s, updated_at = now() WHERE id = %s",
                (f"retitled {self.rng.random()}", key),
            )
        else:
            cur.execute("DELETE FROM documents WHERE id = %s", (key,))


def test_killed_at_random_moments_loses_and_doubles_nothing(source: str, tmp_path: Path) -> None:
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 't', 'b' "
        "FROM generate_series(1, 3000) g",
    )
    specs = catalog_copy(tmp_path, chunk_size=300)
    workload = Workload(source, seed=11)
    workload.start()
    rng = random.Random(5)
    kills = 0
    try:
        for _ in range(12):
            process = _serve(source, specs)
            try:
                process.wait(timeout=rng.uniform(0.5, 2.5))
                pytest.fail(f"serve exited by itself: {process.stderr.read()}")
            except subprocess.TimeoutExpired:
                process.send_signal(signal.SIGKILL)
                process.wait()
                kills += 1
    finally:
        workload.halt.set()
        workload.join()
    runner(source, load(specs)).drain()

    assert kills == 12 and workload.transactions > 50
    assert reduced_state(source) == source_state(source)
    assert duplicated_changes(source) == []


def test_sigterm_stops_serve_cleanly_and_it_resumes(source: str, tmp_path: Path) -> None:
    specs = catalog_copy(tmp_path)
    process = _serve(source, specs)
    assert "serving sophia/source-postgres" in process.stderr.readline()
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'b')")
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0
    assert "sophia/source-postgres: checkpoint" in out
    sql(source, "INSERT INTO documents (id, title, body) VALUES (2, 'a', 'b')")
    runner(source, load(specs)).drain()
    assert sorted(reduced_state(source)) == [1, 2]
    assert duplicated_changes(source) == []


def test_backfill_racing_with_writes(source: str, tmp_path: Path) -> None:
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 't', 'b' "
        "FROM generate_series(1, 4000) g",
    )
    catalog = load(catalog_copy(tmp_path, chunk_size=150))
    workload = Workload(source, seed=3, ids=4500)
    workload.start()
    try:
        report = runner(source, catalog).drain()
    finally:
        workload.halt.set()
        workload.join()
    runner(source, catalog).drain()

    assert report.backfilled_rows >= 3000 and workload.transactions > 20
    assert reduced_state(source) == source_state(source)
    # Per key, the journal holds changes in source order: event LSNs only increase.
    rows = sql(
        source,
        "SELECT key::text, array_agg((document #>> '{_meta,source,loc,1}')"
        '::numeric ORDER BY "offset") FROM flow.journal WHERE collection = %s '
        "AND document #> '{_meta,source,snapshot}' IS NULL GROUP BY key",
        params=(COLLECTION,),
    )
    assert all(lsns == sorted(lsns) for _, lsns in rows)


def test_dropped_slot_is_reported_and_rebackfill_reconciles(source: str, tmp_path: Path) -> None:
    catalog = load(catalog_copy(tmp_path, chunk_size=50))
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 't', 'b' FROM generate_series(1, 120) g",
    )
    capture = runner(source, catalog)
    capture.drain()
    sql(source, "SELECT pg_drop_replication_slot('flow_slot')")
    sql(
        source,
        "DELETE FROM documents WHERE id <= 10",
        "UPDATE documents SET title = 'new' WHERE id = 50",
    )

    with pytest.raises(
        SourceError,
        match=r"replication slot 'flow_slot' is gone \(dropped\?\)"
        r".*`sophia flow drain --rebackfill`",
    ):
        capture.drain()
    capture.reset_for_rebackfill()
    capture.drain()
    assert reduced_state(source) == source_state(source)


def test_invalidated_slot_is_reported(tmp_path: Path) -> None:
    server = embedded(tmp_path / "home")
    url = server.ensure_running()
    sql(url, DOCUMENTS_DDL)
    catalog = load(catalog_copy(tmp_path))
    capture = runner(url, catalog)
    capture.drain()
    conn = psycopg2.connect(url)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("ALTER SYSTEM SET max_slot_wal_keep_size = '1MB'")
        cur.execute("SELECT pg_reload_conf()")
        for _ in range(4):  # more WAL than the slot may hold back, then checkpoints
            cur.execute("CREATE TABLE IF NOT EXISTS filler AS SELECT 1 AS x WITH NO DATA")
            cur.execute("INSERT INTO filler SELECT g FROM generate_series(1, 100000) g")
            cur.execute("SELECT pg_switch_wal()")
            cur.execute("CHECKPOINT")
        cur.execute("SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'flow_slot'")
        assert cur.fetchone()[0] == "lost"
    conn.close()
    with pytest.raises(
        SourceError,
        match=r"replication slot 'flow_slot' cannot be used: it was "
        r"invalidated .*--rebackfill",
    ):
        capture.drain()


def test_wal_level_not_logical_says_how_to_fix(tmp_path: Path) -> None:
    server = embedded(tmp_path / "home")
    url = server.ensure_running()
    sql(url, DOCUMENTS_DDL)
    conn = psycopg2.connect(url)
    conn.autocommit = True
    conn.cursor().execute("ALTER SYSTEM SET wal_level = replica")
    conn.close()
    server.stop()
    url = server.ensure_running()
    with pytest.raises(
        SourceError,
        match=r"wal_level is 'replica'.*ALTER SYSTEM SET wal_level "
        r"= logical` and restart",
    ):
        runner(url, load(catalog_copy(tmp_path))).drain()


def test_table_without_primary_key_is_refused(postgres_url: str, tmp_path: Path) -> None:
    url = new_database(postgres_url)
    try:
        sql(url, "CREATE TABLE documents (id bigint, title text, body text)")
        with pytest.raises(
            SourceError,
            match=r"public.documents has no primary key and no "
            r"replica identity.*REPLICA IDENTITY FULL",
        ):
            runner(url, load(catalog_copy(tmp_path))).drain()
    finally:
        drop_database(url)


def test_missing_table_is_named(postgres_url: str, tmp_path: Path) -> None:
    url = new_database(postgres_url)
    try:
        with pytest.raises(
            SourceError,
            match=r"table public.documents named in the capture "
            r"does not exist; create it",
        ):
            runner(url, load(catalog_copy(tmp_path))).drain()
    finally:
        drop_database(url)


def test_serve_survives_a_postgres_restart(tmp_path: Path) -> None:
    server = embedded(tmp_path / "home")
    url = server.ensure_running()
    sql(url, DOCUMENTS_DDL)
    catalog = load(catalog_copy(tmp_path))
    serving = runner(url, catalog)
    stop = threading.Event()
    thread = threading.Thread(target=serving.serve, args=(stop, 0.1), daemon=True)
    thread.start()
    try:
        sql(url, "INSERT INTO documents (id, title, body) VALUES (1, 'before', 'b')")
        runner(url, catalog).drain()  # waits until the serving capture has it
        server.stop()
        assert server.ensure_running() == url
        sql(url, "INSERT INTO documents (id, title, body) VALUES (2, 'after', 'b')")
        runner(url, catalog).drain()
        assert sorted(reduced_state(url)) == [1, 2]
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(timeout=60)
    assert duplicated_changes(url) == []


def test_failed_journal_write_confirms_and_keeps_nothing(source: str, tmp_path: Path) -> None:
    catalog = load(catalog_copy(tmp_path))
    capture = runner(source, catalog)
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'ok', 'b')")
    capture.drain()
    before = sql(source, "SELECT count(*) FROM flow.journal")[0][0]
    checkpoint = sql(source, "SELECT lsn FROM flow.checkpoints")[0][0]
    confirmed = sql(source, "SELECT confirmed_flush_lsn FROM pg_replication_slots")[0][0]
    sql(
        source,
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.document->>'title' = 'poison' THEN RAISE EXCEPTION 'disk on fire'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER poison BEFORE INSERT ON flow.journal FOR EACH ROW EXECUTE FUNCTION "
        "poison()",
    )
    sql(
        source,
        "INSERT INTO documents (id, title, body) VALUES (2, 'fine', 'b'), "
        "(3, 'poison', 'b'), (4, 'fine', 'b')",
    )

    with pytest.raises(psycopg2.errors.RaiseException, match="disk on fire"):
        capture.drain()
    assert sql(source, "SELECT count(*) FROM flow.journal")[0][0] == before
    assert sql(source, "SELECT lsn FROM flow.checkpoints")[0][0] == checkpoint
    assert sql(source, "SELECT confirmed_flush_lsn FROM pg_replication_slots")[0][0] == confirmed
    assert sorted(reduced_state(source)) == [1]

    sql(source, "DROP TRIGGER poison ON flow.journal")
    capture.drain()
    assert sorted(reduced_state(source)) == [1, 2, 3, 4]
    assert duplicated_changes(source) == []


def test_serve_exits_non_zero_saying_why_when_a_capture_dies(source: str, tmp_path: Path) -> None:
    process = _serve(source, catalog_copy(tmp_path))
    assert "serving sophia/source-postgres" in process.stderr.readline()
    deadline = time.monotonic() + 60
    while not sql(source, "SELECT to_regclass('flow.journal') IS NOT NULL")[0][0]:
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.05)  # polling for the capture to create its tables
    # a fault no reconnect mends (not a lost connection): the journal's table is gone
    sql(source, "ALTER TABLE flow.journal RENAME TO journal_gone")
    sql(source, "INSERT INTO documents (id, title, body) VALUES (1, 'a', 'b')")
    _, err = process.communicate(timeout=120)
    assert process.returncode == 1, err[-2000:]
    assert "capture sophia/source-postgres died" in err and "journal" in err
    assert "stopped because sophia/source-postgres died" in err


def test_a_rebackfill_killed_anywhere_still_deletes_the_keys_gone(
    source: str, tmp_path: Path
) -> None:
    specs = catalog_copy(tmp_path, chunk_size=40)
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 't', 'b' "
        "FROM generate_series(1, 1500) g",
    )
    runner(source, load(specs)).drain()
    rng = random.Random(17)
    for turn in range(4):
        # the slot is lost, and rows go while none exists: only a re-backfill finds out
        sql(source, "SELECT pg_drop_replication_slot('flow_slot')")
        sql(source, "DELETE FROM documents WHERE id %% 9 = %s", params=(turn,))
        process = _serve(source, specs, "drain", "--rebackfill")
        try:
            process.wait(timeout=rng.uniform(0.5, 4.0))  # it may finish first
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
        process.communicate()
        # the restart: the capture again, as it is; killed before its first write, it has
        # only the old checkpoint, whose slot is gone, and says to re-backfill
        restart = _serve(source, specs, "drain")
        _, err = restart.communicate(timeout=300)
        if restart.returncode != 0:
            assert "--rebackfill" in err, err[-2000:]
            again = _serve(source, specs, "drain", "--rebackfill")
            assert again.wait(timeout=300) == 0
        assert reduced_state(source) == source_state(source), f"turn {turn}"


def test_a_crash_between_the_last_chunk_and_its_deletes_still_deletes(
    source: str, tmp_path: Path
) -> None:
    """The window the random kills rarely hit: the re-backfill's last chunk is committed,
    the deletes it owes are not (a trigger fails their batch, as a crash would)."""
    catalog = load(catalog_copy(tmp_path, chunk_size=50))
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 't', 'b' FROM generate_series(1, 120) g",
    )
    runner(source, catalog).drain()
    sql(
        source,
        "SELECT pg_drop_replication_slot('flow_slot')",
        "DELETE FROM documents WHERE id <= 10",  # while no slot exists
        "CREATE FUNCTION refuse_deletes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.document #>> '{_meta,op}' = 'd' THEN RAISE EXCEPTION 'crash'; END IF; "
        "RETURN NEW; END $$",
        "CREATE TRIGGER refuse_deletes BEFORE INSERT ON flow.journal FOR EACH ROW "
        "EXECUTE FUNCTION refuse_deletes()",
    )
    capture = runner(source, catalog)
    capture.reset_for_rebackfill()
    with pytest.raises(psycopg2.Error, match="crash"):
        capture.drain()
    sql(source, "DROP TRIGGER refuse_deletes ON flow.journal")
    runner(source, catalog).drain()  # the restart owes the deletes still
    assert reduced_state(source) == source_state(source)


def _streamed(url: str) -> int:
    return sql(
        url,
        "SELECT count(*) FROM flow.journal WHERE document #> '{_meta,source,snapshot}' IS NULL",
    )[0][0]


def test_a_transaction_killed_while_journaled_in_parts_loses_and_doubles_nothing(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One source transaction far over the batch limit is journaled in parts before its
    commit is confirmed; the capture is killed between parts, and the restart skips exactly
    the changes already written."""
    specs = catalog_copy(tmp_path)
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 'old', 'b' "
        "FROM generate_series(1, 500) g",
    )
    runner(source, load(specs)).drain()
    sql(
        source,
        "BEGIN",
        "INSERT INTO documents (id, title, body) SELECT g, 't', repeat('x', 300) "
        "FROM generate_series(1001, 31000) g",
        "UPDATE documents SET id = id + 100000 WHERE id <= 100",  # key changes: two changes
        "UPDATE documents SET title = 'retitled' WHERE id BETWEEN 200 AND 400",
        "DELETE FROM documents WHERE id BETWEEN 450 AND 500",
        "COMMIT",
    )
    expected = 30_000 + 2 * 100 + 201 + 51
    limits = {"SOPHIA_FLOW_BATCH_DOCUMENTS": "2000"}
    process = _serve(source, specs, "drain", env=limits)
    try:
        written = 0
        while written < 6_000 and process.poll() is None:  # a few parts in, well before the end
            written = _streamed(source)
        assert process.poll() is None, "the drain ended before it could be killed"
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.communicate()
    assert 6_000 <= _streamed(source) < expected

    monkeypatch.setenv("SOPHIA_FLOW_BATCH_DOCUMENTS", "2000")
    runner(source, load(specs)).drain()
    assert _streamed(source) == expected
    assert duplicated_changes(source) == []
    assert reduced_state(source) == source_state(source)


def _written(url: str) -> int | None:
    rows = sql(url, "SELECT (state -> 'in_transaction' ->> 'written')::int FROM flow.checkpoints")
    return rows[0][0] if rows else None


def test_a_restart_inside_a_transaction_never_lowers_its_written_count(
    source: str, tmp_path: Path
) -> None:
    """Parts cut by bytes: the prefix a restart skips must not count toward the next part,
    or that part's checkpoint would claim fewer changes written, and a second crash would
    journal the difference twice."""
    specs = catalog_copy(tmp_path)
    runner(source, load(specs)).drain()
    sql(
        source,
        "INSERT INTO documents (id, title, body) SELECT g, 't', repeat('x', 600) "
        "FROM generate_series(1, 20000) g",
    )
    limits = {"SOPHIA_FLOW_BATCH_MB": "1", "SOPHIA_FLOW_BATCH_DOCUMENTS": "1000000"}
    first = _serve(source, specs, "drain", env=limits)
    try:
        while (_written(source) or 0) < 6_000 and first.poll() is None:
            pass
        assert first.poll() is None, "the drain ended before it could be killed"
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.communicate()
    before = _written(source)
    seen = []
    restart = _serve(source, specs, "drain", env=limits)
    while restart.poll() is None:
        seen.append(_written(source))
    assert restart.wait() == 0, restart.stderr.read()[-2000:]
    parts = [w for w in seen if w is not None]
    assert parts == sorted(parts) and all(w >= before for w in parts), (before, parts)
    assert duplicated_changes(source) == []
    assert reduced_state(source) == source_state(source)
