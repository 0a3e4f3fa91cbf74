"""Child process of test_kill.py: appends ADK events with state deltas until it is killed.

Prints ``ACK <n>`` (flushed) once ``append_event`` of event ``n`` returned.
"""

from __future__ import annotations

import asyncio
import json
import sys

from asm_kernel import Kernel
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions

from asm_adk import AsmSessionService


async def main(store: dict[str, object]) -> None:
    async with Kernel({"store": store}) as kernel:
        service = AsmSessionService(kernel)
        session = await service.create_session(app_name="app", user_id="u", session_id="victim")
        n = 0
        while True:
            delta = {"n": n, "user:n": n}
            await service.append_event(
                session, Event(author="user", invocation_id=str(n), actions=EventActions(state_delta=delta))
            )
            print(f"ACK {n}", flush=True)
            n += 1


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
