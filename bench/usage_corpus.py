# ruff: noqa: RUF001  (the Chinese paragraph keeps its own punctuation)
"""Make the request corpus whose token counts ``bench/data/recorded_usage.jsonl`` records.

Sessions are built from this repository's own text — prose from ``docs/``, Python from
``asm_kernel/``, JSON from the event reference's shapes — plus a few paragraphs in German,
French, Japanese and Chinese, as a user, an assistant and tool results would send them. Each
request is written with its messages; ``bench/count_usage.mjs`` then counts every one with the
providers' tokenizers (OpenAI's o200k_base, in the chat format's framing; Anthropic's published
Claude tokenizer) and writes the recorded counts. Run both only to refresh the data::

    python bench/usage_corpus.py > /tmp/requests.jsonl
    node bench/count_usage.mjs < /tmp/requests.jsonl > bench/data/recorded_usage.jsonl
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MULTILINGUAL = [
    "Die Sitzung wurde gestern Abend beendet, aber der Bericht fehlt noch. Bitte prüfe die Zahlen "
    "für das dritte Quartal und schick mir eine kurze Zusammenfassung bis morgen früh.",
    "Le serveur a redémarré deux fois cette nuit ; les journaux indiquent une erreur de mémoire. "
    "Peux-tu vérifier la configuration et me dire si la limite doit être augmentée ?",
    "昨日の会議の議事録をまとめてください。特に予算と納期についての決定事項を箇条書きでお願いします。",
    "请把这份报告翻译成英文，并检查其中的数字是否与上个月的数据一致。如果有差异，请列出来。",
]


def chunks(text: str, size: int, rng: random.Random) -> list[str]:
    out = []
    while text:
        n = rng.randint(size // 2, size)
        out.append(text[:n])
        text = text[n:]
    return out


def main() -> None:
    rng = random.Random(14)
    prose = chunks("\n".join(p.read_text() for p in sorted((ROOT / "docs").rglob("*.md"))), 900, rng)
    code = chunks("\n".join(p.read_text() for p in sorted((ROOT / "asm_kernel").rglob("*.py"))), 1200, rng)
    events = json.loads(json.dumps({"shapes": [str(p) for p in prose[:40]]}))
    data = [json.dumps({"result": c[:300], "rows": list(range(rng.randint(5, 40))), "ok": True}) for c in code[:200]]
    kinds = {
        "prose": lambda: rng.choice(prose),
        "code": lambda: rng.choice(code),
        "json": lambda: rng.choice(data),
        "multilingual": lambda: " ".join(rng.choice(MULTILINGUAL) for _ in range(rng.randint(1, 4))),
    }
    del events
    for kind in [*kinds, "mixed"]:
        for n in range(30):
            messages = []
            turns = rng.randint(1, 12)
            for t in range(turns):
                pick = kinds[kind] if kind != "mixed" else kinds[rng.choice(list(kinds))]
                messages.append({"role": "user", "text": pick()})
                if t < turns - 1:
                    messages.append({"role": "assistant", "text": pick()[: rng.randint(40, 600)]})
            system = "You are a careful assistant. Answer briefly and cite the files you used."
            json.dump({"kind": kind, "n": n, "system": system, "messages": messages}, sys.stdout, ensure_ascii=False)
            sys.stdout.write("\n")


if __name__ == "__main__":
    main()
