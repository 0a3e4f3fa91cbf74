"""Child process of test_kill.py: appends turns to an AsmSession until it is killed.

Prints ``ACK <n>`` (flushed) after turn ``n`` was acknowledged by the store, so the parent knows
exactly what was acknowledged when it sends SIGKILL.
"""

from __future__ import annotations

import asyncio
import json
import sys

from asm_kernel import Kernel

from asm_openai_agents import AsmSession


async def main(store: dict[str, object], session_id: str) -> None:
    async with Kernel({"store": store}) as kernel:
        session = AsmSession(session_id, kernel)
        n = 0
        while True:
            await session.add_items([{"role": "user", "content": f"q{n}"}, {"role": "assistant", "content": f"a{n}"}])
            print(f"ACK {n}", flush=True)
            n += 1


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1]), sys.argv[2]))
