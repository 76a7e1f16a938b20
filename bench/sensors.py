"""`uv run python -m bench.sensors`: one tick of each sensor against a large backlog.

- n8n: 10,000 pending executions on a loopback n8n (the contract server, its validator off so
  the client is measured, not the validator); executions handled per second, against the
  raw HTTP walk of the same pages (the protocol floor) and the seed's 220/s;
- Estuary: 100,000 pending documents in a collection's journal; one tick's time, against the
  bare query for the journal's last offset.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass

from bench.report import add_json_flag, say
from bench.scratch import scratch_database

SEED_EXECUTIONS_PER_S = 220.0
ENV = "SOPHIA_BENCH_URL"


@dataclass
class SensorFigures:
    executions: int
    n8n_tick_s: float
    n8n_floor_s: float
    documents: int
    estuary_tick_s: float
    estuary_floor_s: float

    def as_dict(self) -> dict:
        rate = self.executions / self.n8n_tick_s
        return {
            "executions": self.executions,
            "n8n_tick_s": round(self.n8n_tick_s, 3),
            "n8n_executions_per_s": round(rate),
            "n8n_vs_seed": round(rate / SEED_EXECUTIONS_PER_S, 1),
            "n8n_vs_http_floor": round(self.n8n_floor_s / self.n8n_tick_s, 3),
            "documents": self.documents,
            "estuary_tick_s": round(self.estuary_tick_s, 3),
            "estuary_floor_s": round(self.estuary_floor_s, 4),
        }


def run_sensor_bench(
    platform_url: str, executions: int, documents: int, say=print
) -> SensorFigures:
    n8n_tick, n8n_floor = _n8n(executions, say)
    estuary_tick, estuary_floor = _estuary(platform_url, documents, say)
    return SensorFigures(executions, n8n_tick, n8n_floor, documents, estuary_tick, estuary_floor)


def _n8n(executions: int, say) -> tuple[float, float]:
    import dagster as dg
    import httpx

    from resources.n8n import N8nResource
    from sensors.n8n import WorkflowAction, build_n8n_sensor
    from tests.support.contract_servers.n8n import API_KEY, N8nContractServer

    os.environ["SOPHIA_N8N_API_KEY"] = API_KEY
    job = dg.define_asset_job("embed", selection=[dg.AssetKey(["sophia", "vector_updates"])])
    with N8nContractServer(workflows={"1001"}, validate=False) as server:
        server.add("1001", executions)
        say(f"n8n: {executions} pending executions...")
        started = time.perf_counter()
        cursor = None
        with httpx.Client(
            base_url=f"{server.url}/api/v1", headers={"X-N8N-API-KEY": API_KEY}
        ) as client:
            while True:
                params = {
                    "workflowId": "1001",
                    "limit": 250,
                    **({"cursor": cursor} if cursor else {}),
                }
                cursor = client.get("/executions", params=params).json()["nextCursor"]
                if not cursor:
                    break
        floor = time.perf_counter() - started
        sensor = build_n8n_sensor([WorkflowAction("1001", "bench", "re-embed")], [job])
        with dg.instance_for_test() as instance:
            # a sensor that knew the workflow before the backlog (its daemon was down)
            known = json.dumps({"1001": {"after": 0, "done": [], "waiting": []}})
            context = dg.build_sensor_context(
                instance=instance,
                cursor=known,
                resources={"n8n": N8nResource(base_url=server.url)},
            )
            started = time.perf_counter()
            result = sensor.evaluate_tick(context)
            tick = time.perf_counter() - started
        if len(result.run_requests or []) != executions:
            raise RuntimeError(
                f"the n8n tick handled {len(result.run_requests or [])} of {executions} executions"
            )
    return tick, floor


def _estuary(platform_url: str, documents: int, say) -> tuple[float, float]:
    import dagster as dg
    import psycopg2

    from resources.postgres import PostgresResource
    from sensors.estuary import Thresholds, build_estuary_sensor
    from sophia_assets.flow import journal

    with scratch_database(platform_url, "sensors") as url:
        os.environ[ENV] = url
        conn = psycopg2.connect(url)
        journal.ensure_schema(conn)
        with conn, conn.cursor() as cur:
            say(f"estuary: {documents} pending documents...")
            cur.execute(
                'INSERT INTO flow.journal (collection, "offset", key, document, commit_lsn, '
                "source_ts) SELECT 'sophia/postgresql_cdc', g, jsonb_build_array(g), "
                "json_build_object('id', g), '0/0', now() - interval '5 ms' "
                "FROM generate_series(0, %s) g",
                (documents - 1,),
            )
            started = time.perf_counter()
            cur.execute(
                'SELECT max("offset") FROM flow.journal WHERE collection = %s',
                ("sophia/postgresql_cdc",),
            )
            cur.fetchone()
            floor = time.perf_counter() - started
        conn.close()
        cdc = dg.AssetKey(["sophia", "postgresql_cdc"])
        job = dg.define_asset_job("embed", selection=[dg.AssetKey(["sophia", "vector_updates"])])
        sensor = build_estuary_sensor(
            cdc, dg.AssetKey(["sophia", "vector_updates"]), job, Thresholds()
        )
        with dg.instance_for_test() as instance:
            context = dg.build_sensor_context(
                instance=instance, resources={"postgres": PostgresResource(url_env=ENV)}
            )
            started = time.perf_counter()
            result = sensor.evaluate_tick(context)
            tick = time.perf_counter() - started
        if not result.run_requests:
            raise RuntimeError("the Estuary tick requested no embedding run")
    return tick, floor


def print_sensor_figures(figures: SensorFigures, as_json: bool) -> None:
    data = figures.as_dict()
    print(
        f"n8n: one tick over {figures.executions} executions in {data['n8n_tick_s']} s = "
        f"{data['n8n_executions_per_s']} executions/s ({data['n8n_vs_seed']}x the seed's "
        f"220/s; the bare HTTP walk of the pages takes {figures.n8n_floor_s:.3f} s)"
    )
    print(
        f"estuary: one tick over {figures.documents} pending documents in "
        f"{data['estuary_tick_s']} s (the bare last-offset query: {data['estuary_floor_s']} s)"
    )
    if as_json:
        print(json.dumps(data))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.sensors", description=__doc__)
    parser.add_argument("--executions", type=int, default=10_000, help="pending (10000)")
    parser.add_argument("--documents", type=int, default=100_000, help="pending (100000)")
    add_json_flag(parser)
    args = parser.parse_args(argv)
    from sophia_assets.postgres.embedded_server import postgres_url

    figures = run_sensor_bench(postgres_url(), args.executions, args.documents, say=say)
    print_sensor_figures(figures, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
