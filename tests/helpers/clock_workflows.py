"""Two tiny workflows for tests/saga/test_sandbox.py, in a module that imports nothing of ours."""

from datetime import datetime

from temporalio import workflow


@workflow.defn
class ReadsTheClock:
    @workflow.run
    async def run(self) -> str:
        return datetime.now().isoformat()  # forbidden in a workflow: not replayable


@workflow.defn
class Deterministic:
    @workflow.run
    async def run(self) -> str:
        return workflow.now().isoformat()
