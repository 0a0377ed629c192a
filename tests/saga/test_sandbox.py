"""Production runs workflow code unsandboxed (one import for all runs); the tests run it in the sandbox.

That is safe only while (1) the tests' workers are guarded, (2) the guard refuses a non-deterministic
call, and (3) our workflow modules keep no state between runs, since production shares one import.
Passing our modules through the sandbox was measured too: it does not check their calls (pinned below).
"""

import ast
import importlib
import pkgutil
import types
import uuid
from datetime import datetime, timedelta

import pytest
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker, WorkflowRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import workflows
from miaofa.settings import Settings
from tests.helpers.clock_workflows import Deterministic, ReadsTheClock
from tests.helpers.waiting import eventually
from worker import GUARDED_RUNNER, build_worker

IMMUTABLE = (str, int, float, bool, bytes, tuple, frozenset, timedelta, type(None), RetryPolicy)
CLOCK_REFUSED = "RestrictedWorkflowAccessError"  # the failure's type: its message is encrypted by the codec


def _workflow_modules() -> list[types.ModuleType]:
    names = [info.name for info in pkgutil.iter_modules(workflows.__path__)]
    assert {"order", "proofs", "support", "state", "policies", "patches"} <= set(names)
    return [importlib.import_module(f"workflows.{name}") for name in names]


async def test_the_tests_workers_are_guarded_and_production_is_not_unless_asked(dev_env: WorkflowEnvironment) -> None:
    assert build_worker(dev_env.client, activities=[])._config["workflow_runner"] is GUARDED_RUNNER
    assert Settings(_env_file=None).workflow_sandbox is False
    assert Settings(_env_file=None, workflow_sandbox=True).workflow_sandbox is True


@pytest.mark.parametrize("module", _workflow_modules(), ids=lambda module: module.__name__)
def test_a_workflow_module_keeps_no_state_between_runs(module: types.ModuleType) -> None:
    """Every module-level value is a constant (a dict only as a named constant); nothing rebinds a global."""
    for name, value in vars(module).items():
        if name.startswith("__") or isinstance(value, (types.ModuleType, types.FunctionType, type)):
            continue
        if callable(value) or getattr(value, "__module__", "") == "typing":
            continue  # imported helpers and type aliases
        for each in value.values() if isinstance(value, dict) else [value]:
            assert isinstance(each, IMMUTABLE), f"{module.__name__}.{name} holds a {type(each).__name__}"
        assert not isinstance(value, dict) or name.isupper(), f"{module.__name__}.{name}: a dict not a constant"
    tree = ast.parse(open(module.__file__ or "").read())
    assert [node for node in ast.walk(tree) if isinstance(node, (ast.Global, ast.Nonlocal))] == []


async def _first_task_failure(client: Client, workflow_id: str) -> str:
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.HasField("workflow_task_failed_event_attributes"):
            return event.workflow_task_failed_event_attributes.failure.application_failure_info.type
    return ""


async def _clock_read(client: Client, runner: WorkflowRunner) -> str:
    """What a workflow that reads the wall clock gets on this runner: its task failure's type, or "completed"."""
    queue = f"sandbox-{uuid.uuid4()}"
    async with Worker(client, task_queue=queue, workflows=[ReadsTheClock, Deterministic], workflow_runner=runner):
        fine = await client.execute_workflow(Deterministic.run, id=f"deterministic-{uuid.uuid4()}", task_queue=queue)
        assert fine[:4] == str(datetime.now().year)
        clock = f"reads-the-clock-{uuid.uuid4()}"
        handle = await client.start_workflow(
            ReadsTheClock.run, id=clock, task_queue=queue, execution_timeout=timedelta(seconds=20)
        )

        async def outcome() -> str:
            failure = await _first_task_failure(client, clock)
            if failure:
                return failure
            described = await handle.describe()
            return "completed" if described.close_time is not None else ""

        seen = await eventually(outcome, timeout=15)
        if seen != "completed":
            await handle.terminate("test over")
        return seen


async def test_the_guard_refuses_a_clock_read(dev_env: WorkflowEnvironment) -> None:
    assert await _clock_read(dev_env.client, GUARDED_RUNNER) == CLOCK_REFUSED


async def test_a_module_passed_through_the_sandbox_is_not_checked(dev_env: WorkflowEnvironment) -> None:
    """Why production is unsandboxed rather than passing our modules through: it would be as unchecked."""
    passing = SandboxedWorkflowRunner(
        restrictions=GUARDED_RUNNER.restrictions.with_passthrough_modules("tests.helpers.clock_workflows")
    )
    assert isinstance(passing.restrictions, SandboxRestrictions)
    assert await _clock_read(dev_env.client, passing) == "completed"
