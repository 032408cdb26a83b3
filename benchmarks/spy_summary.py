"""Summarise a ``py-spy record -f raw --threads`` profile per thread:
``python -m benchmarks.spy_summary profile.txt [--top 12]``.

For each thread, the share of its samples spent *in* each function (its own code, the leaf
frame) and *under* it (inclusive), so the worker's encode, batching and HTTP, and the
caller's logging, formatting and enqueue, can be told apart.  See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from typing import Optional

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<where>[^()]*)\)$")


def _short(frame: str) -> str:
    m = _FRAME.match(frame)
    if not m:
        return frame
    where = m.group("where").rsplit(":", 1)[0].rsplit("/", 2)  # per function, not per line
    return f"{m.group('func')} ({'/'.join(where[-2:])})"


def summarise(text: str, top: int) -> str:
    own: dict[str, Counter[str]] = defaultdict(Counter)
    under: dict[str, Counter[str]] = defaultdict(Counter)
    total: Counter[str] = Counter()
    for row in text.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        thread, _, frames_text = stack.partition(";")
        thread = re.sub(r"^thread \(\w+\): ", "", thread)
        frames = [_short(f) for f in frames_text.split(";") if f]
        n = int(count)
        total[thread] += n
        if frames:
            own[thread][frames[-1]] += n
        for frame in set(frames):
            under[thread][frame] += n
    out = []
    for thread, n in total.most_common():
        out.append(f"### {thread}: {n:,} samples")
        out.append("")
        out.append("| % in (own code) | function | % under (inclusive) |")
        out.append("|---|---|---|")
        for frame, k in own[thread].most_common(top):
            out.append(f"| {100 * k / n:.1f} | `{frame}` | {100 * under[thread][frame] / n:.1f} |")
        out.append("")
    return "\n".join(out)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.spy_summary", description=__doc__.splitlines()[0]
    )
    parser.add_argument("profile")
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args(argv)
    with open(args.profile) as profile:
        print(summarise(profile.read(), args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
