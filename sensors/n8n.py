"""The n8n sensor: executions of configured n8n workflows become asset events and runs.

`sensors/n8n_workflows.yaml` (or `SOPHIA_N8N_WORKFLOWS`) maps each workflow to an action; an
unknown action is a configuration error when the code location loads. Each workflow is the
external asset `n8n/<name>`, materialized once per settled execution. A successful execution
requests its action's job with the execution id as run key, so nothing is acted on twice;
failed, crashed and canceled executions are reported and not acted on.

The cursor keeps, per workflow, the highest execution id below which everything is handled,
plus the handled ids above it (executions still running hold the cursor back until they
settle), so none is missed or handled twice across pages, ticks and daemon restarts. An
execution `waiting` (a Wait node, possibly for days) is parked instead: the cursor moves on,
and the parked ids are looked up one by one each tick until they settle. A workflow the
sensor has never seen starts at its newest execution: its history is not acted on.
"""

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import httpx
import yaml

from resources.n8n import N8nError, N8nResource

WORKFLOWS_FILE = Path(__file__).with_name("n8n_workflows.yaml")
ACTIONS = {
    "re-embed": "embed",
    "reindex": "reindex",
    "drain": "drain",
    "rebuild-image": "images",  # the mapped images/<image> only
    "deploy-stack": "stacks",  # the mapped infra/<stack> only
}
# Actions that name what they act on: the workflow field that names it, the asset prefix.
TARGETS = {"rebuild-image": ("image", "images"), "deploy-stack": ("stack", "infra")}
TIME_BUDGET_S = 45.0  # a sensor tick is cut off after 60 s
MAX_PARKED = 500  # waiting executions looked up per workflow; beyond it the oldest drop


@dataclass(frozen=True)
class WorkflowAction:
    id: str
    name: str
    action: str
    target: str | None = None  # the image or stack a rebuild-image/deploy-stack acts on

    @property
    def asset_key(self) -> dg.AssetKey:
        return dg.AssetKey(["n8n", self.name])


def load_workflows(
    path: Path | None = None, images: list[str] | None = None, stacks: list[str] | None = None
) -> list[WorkflowAction]:
    """The configured workflows; `images` and `stacks` are the names a rebuild-image or a
    deploy-stack may name."""
    known = {"image": images or [], "stack": stacks or []}
    path = Path(path or os.environ.get("SOPHIA_N8N_WORKFLOWS") or WORKFLOWS_FILE)
    document = yaml.safe_load(path.read_text()) or {}
    entries = document.get("workflows") or []
    workflows = []
    for index, entry in enumerate(entries):
        where = f"{path}: workflows[{index}]"
        missing = {"id", "name", "action"} - set(entry or {})
        if missing:
            raise ValueError(
                f"{where}: missing {', '.join(sorted(missing))}; each workflow "
                "needs id, name and action"
            )
        if entry["action"] not in ACTIONS:
            raise ValueError(
                f"{where}.action: unknown action {entry['action']!r}; use one of "
                f"{', '.join(ACTIONS)}"
            )
        field = TARGETS[entry["action"]][0] if entry["action"] in TARGETS else None
        target = entry.get(field) if field else None
        if field and target not in known[field]:
            raise ValueError(
                f"{where}.{field}: {entry['action']} needs the {field} it acts on, one of "
                f"{', '.join(known[field]) or '(none configured)'}; got {target!r}"
            )
        workflows.append(
            WorkflowAction(str(entry["id"]), str(entry["name"]), entry["action"], target)
        )
    return workflows


def workflow_specs(workflows: list[WorkflowAction]) -> list[dg.AssetSpec]:
    return [
        dg.AssetSpec(
            w.asset_key,
            group_name="workflows",
            kinds={"n8n"},
            description=f"n8n workflow {w.id}; a successful execution runs {w.action}.",
            metadata={"n8n/workflow_id": w.id},
        )
        for w in workflows
    ]


STOPPED = dg.DefaultSensorStatus.STOPPED
NO_WORKFLOWS = (
    "No n8n workflows are configured, so this sensor is stopped: list them in "
    "sensors/n8n_workflows.yaml (or the file SOPHIA_N8N_WORKFLOWS names), each with the action "
    "a successful execution starts."
)


def build_n8n_sensor(
    workflows: list[WorkflowAction], jobs: list, minimum_interval_seconds: int = 15
) -> dg.SensorDefinition:
    available = {job.name for job in jobs}

    @dg.sensor(
        name="n8n_executions",
        jobs=jobs,
        minimum_interval_seconds=minimum_interval_seconds,
        # With nothing to watch it is stopped, and says so where the UI lists sensors.
        default_status=dg.DefaultSensorStatus.RUNNING if workflows else STOPPED,
        description="Executions of the workflows in sensors/n8n_workflows.yaml."
        if workflows
        else NO_WORKFLOWS,
    )
    def _sensor(context: dg.SensorEvaluationContext, n8n: N8nResource):
        if not workflows:
            return dg.SkipReason(NO_WORKFLOWS)
        cursor = json.loads(context.cursor) if context.cursor else {}
        started = time.monotonic()
        events, requests, notes = [], [], []
        for workflow in workflows:
            if time.monotonic() - started > TIME_BUDGET_S:
                notes.append("time budget reached; the rest waits for the next tick")
                break
            state = cursor.get(workflow.id)
            try:
                if not n8n.workflow_exists(workflow.id):
                    notes.append(
                        f"workflow {workflow.id} ({workflow.name}) is not known to n8n; "
                        "fix its id in sensors/n8n_workflows.yaml"
                    )
                    continue
                if state is None:  # first sight: what ran before is history
                    newest = n8n.newest_execution_id(workflow.id)
                    cursor[workflow.id] = {"after": newest, "done": [], "waiting": []}
                    notes.append(
                        f"first sight of {workflow.name}: executions up to {newest} are "
                        "history, not acted on"
                    )
                    continue
                page = n8n.executions_after(workflow.id, state["after"])
                parked, gone = _settled_parked(n8n, state, page.executions)
            except (N8nError, httpx.HTTPError) as err:  # includes n8n being unreachable
                return dg.SensorResult(skip_reason=f"n8n: {err}", cursor=context.cursor)
            done = set(state["done"])
            waiting = set(state.get("waiting", [])) - {e.id for e in parked} - gone
            for execution in [*parked, *page.executions]:
                if execution.id in done or execution.holds_cursor:
                    continue
                if not execution.settled:
                    waiting.add(execution.id)
                    continue
                waiting.discard(execution.id)
                events.append(_materialization(workflow, execution))
                done.add(execution.id)
                request = _request(workflow, execution, available, notes)
                if request:
                    requests.append(request)
            advanced = _advance(state["after"], done | waiting, page.executions)
            cursor[workflow.id] = {
                "after": advanced["after"],
                "done": [i for i in advanced["done"] if i not in waiting],
                "waiting": sorted(waiting)[-MAX_PARKED:],
            }
        for note in notes:
            context.log.warning(note)
        return dg.SensorResult(
            run_requests=requests,
            asset_events=events,
            cursor=json.dumps(cursor),
            skip_reason=None if events or requests else ("; ".join(notes) or "no new executions"),
        )

    return _sensor


def _settled_parked(n8n: N8nResource, state: dict, page: list) -> tuple[list, set[int]]:
    """The parked (waiting) executions that have settled since, looked up by id, and the
    ids n8n no longer has (pruned: nothing left to act on). One on the page is not looked
    up twice."""
    on_page = {e.id for e in page}
    settled, gone = [], set()
    for execution_id in state.get("waiting", []):
        if execution_id in on_page:
            continue
        execution = n8n.execution(execution_id)
        if execution is None:
            gone.add(execution_id)
        elif execution.settled:
            settled.append(execution)
    return settled, gone


def _materialization(workflow: WorkflowAction, execution) -> dg.AssetMaterialization:
    return dg.AssetMaterialization(
        asset_key=workflow.asset_key,
        metadata={
            "execution_id": execution.id,
            "status": execution.status,
            "mode": execution.mode,
            "started_at": execution.started_at or "",
            "stopped_at": execution.stopped_at or "",
        },
    )


def _request(workflow: WorkflowAction, execution, available: set[str], notes: list[str]):
    if execution.status != "success":
        return None  # reported, not acted on
    job = ACTIONS[workflow.action]
    if job is None or job not in available:
        notes.append(
            f"execution {execution.id} of {workflow.name}: action {workflow.action!r} "
            "is not available yet (its assets arrive with their issue); refused"
        )
        return None
    return dg.RunRequest(
        job_name=job,
        asset_selection=[dg.AssetKey([TARGETS[workflow.action][1], workflow.target])]
        if workflow.target
        else None,
        run_key=f"n8n:{workflow.id}:{execution.id}",
        tags={"sophia/n8n_workflow": workflow.name, "sophia/n8n_execution": str(execution.id)},
    )


def _advance(after: int, done: set[int], seen) -> dict:
    """Moves `after` up over handled (or parked) ids while no running execution is in the
    way."""
    unsettled = sorted(e.id for e in seen if e.holds_cursor)
    limit = unsettled[0] if unsettled else None
    for execution_id in sorted(done):
        if limit is not None and execution_id > limit:
            break
        if execution_id > after and (limit is None or execution_id < limit):
            after = execution_id
    return {"after": after, "done": sorted(i for i in done if i > after)}
