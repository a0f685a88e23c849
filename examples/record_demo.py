"""Record the end-to-end demo: a real LoCoMo conversation ingested, consolidated, and an agent answering from
``/v1/context`` — as an asciinema cast and an animated SVG of the terminal.

    .venv/bin/python examples/record_demo.py --key <write+admin key> [--url http://127.0.0.1:8000]

writes ``docs/demo/conversation_agent.cast`` (asciinema v2: ``asciinema play`` it, or upload it) and
``docs/demo/conversation_agent.svg`` (opens in any browser). What is recorded is
``examples/conversation_agent.py`` run for real against the app; long pauses (consolidation) are cut to
``--idle`` seconds, as asciinema's ``idle_time_limit`` does. The test suite regenerates the recording
(tests/serve/app/test_client_e2e.py), so it shows what the code does today.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import importlib.util
import io
import json
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "docs" / "demo"
NAME = "conversation_agent"
WIDTH, HEIGHT = 100, 36
COMMAND = "python examples/conversation_agent.py --questions {questions} --budget {budget}"


def _agent() -> ModuleType:
    spec = importlib.util.spec_from_file_location(NAME, REPO / "examples" / f"{NAME}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Recorder(io.TextIOBase):
    """A text stream that timestamps what is written to it (an asciinema "o" event per write)."""

    def __init__(self, idle_s: float, echo: Any | None = None) -> None:
        self.events: list[tuple[float, str]] = []
        self._idle = idle_s
        self._echo = echo
        self._last = time.monotonic()
        self._clock = 0.0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not text:
            return 0
        now = time.monotonic()
        self._clock += min(now - self._last, self._idle)
        self._last = now
        self.events.append((round(self._clock, 3), text))
        if self._echo is not None:
            self._echo.write(text)
        return len(text)

    def type_command(self, command: str) -> None:
        """A shell prompt and the command typed at a human pace."""
        self.write("$ ")
        for ch in command:
            self._last -= 0.04
            self.write(ch)
        self._last -= 0.4
        self.write("\n")


def cast(events: list[tuple[float, str]], *, title: str) -> str:
    """asciinema v2: a header line, then ``[time, "o", data]`` per event (terminal newlines are CRLF)."""
    header = {
        "version": 2, "width": WIDTH, "height": HEIGHT, "timestamp": int(time.time()), "title": title,
        "idle_time_limit": 2, "env": {"TERM": "xterm-256color", "SHELL": "/bin/bash"},
    }  # fmt: skip
    lines = [json.dumps(header)]
    lines += [json.dumps([t, "o", text.replace("\r\n", "\n").replace("\n", "\r\n")]) for t, text in events]
    return "\n".join(lines) + "\n"


def screen_lines(events: list[tuple[float, str]]) -> list[tuple[float, str]]:
    """The terminal's lines, wrapped at ``WIDTH``, each with the time it was completed."""
    out: list[tuple[float, str]] = []
    current = ""
    for t, text in events:
        for ch in text:
            if ch == "\n":
                out.append((t, current))
                current = ""
                continue
            current += ch
            if len(current) == WIDTH:
                out.append((t, current))
                current = ""
    if current:
        out.append((events[-1][0], current))
    return out


def svg(events: list[tuple[float, str]]) -> str:
    """An animated SVG terminal: each line appears when it was printed, and the screen scrolls once it is
    full (played once; reload to replay)."""
    lines = screen_lines(events)
    total = max(lines[-1][0] if lines else 0.0, 0.1)
    cw, lh, pad = 8.4, 17.0, 12.0
    width, height = WIDTH * cw + 2 * pad, HEIGHT * lh + 2 * pad + 22
    scrolls: list[tuple[float, int]] = [(0.0, 0)]
    texts = []
    for i, (t, line) in enumerate(lines):
        if i >= HEIGHT:
            scrolls.append((t, i - HEIGHT + 1))
        body = html.escape(line) or " "
        texts.append(f'<text y="{(i + 1) * lh:.1f}" style="animation-delay:{t:.2f}s">{body}</text>')
    frames = " ".join(
        f"{100.0 * t / total:.3f}%{{transform:translateY({-first * lh:.1f}px)}}" for t, first in scrolls
    )
    font = "DejaVu Sans Mono, Menlo, Consolas, monospace"
    return f"""<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" \
viewBox="0 0 {width:.0f} {height:.0f}" font-family="{font}" font-size="14">
<title>hybridmem: a LoCoMo conversation ingested, consolidated, and answered from /v1/context</title>
<style>
text {{ fill: #d8dee9; white-space: pre; opacity: 0; animation: show 0.01s forwards; }}
@keyframes show {{ to {{ opacity: 1; }} }}
#scroll {{ animation: scroll {total:.2f}s step-end forwards; }}
@keyframes scroll {{ {frames} }}
</style>
<rect width="100%" height="100%" rx="8" fill="#2e3440"/>
<circle cx="18" cy="14" r="5" fill="#bf616a"/><circle cx="36" cy="14" r="5" fill="#ebcb8b"/>\
<circle cx="54" cy="14" r="5" fill="#a3be8c"/>
<svg x="{pad}" y="{pad + 18}" width="{WIDTH * cw:.0f}" height="{HEIGHT * lh:.0f}">
<g id="scroll">
{chr(10).join(texts)}
</g>
</svg>
</svg>
"""


def record(
    data: str, url: str, key: str, *, questions: int, budget: int, idle_s: float, echo: bool
) -> tuple[int, list[tuple[float, str]]]:
    """Run the conversation agent against the app, recording its terminal output."""
    rec = Recorder(idle_s, echo=sys.stdout if echo else None)
    rec.type_command(COMMAND.format(questions=questions, budget=budget))
    argv = [data, "--url", url, "--key", key, "--questions", str(questions), "--budget", str(budget)]
    with contextlib.redirect_stdout(rec):
        code: int = _agent().main(argv)
    rec.write("$ \n")
    return code, rec.events


def write(events: list[tuple[float, str]], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    cast_path, svg_path = out / f"{NAME}.cast", out / f"{NAME}.svg"
    cast_path.write_text(cast(events, title="hybridmem: ingest, consolidate, answer from /v1/context"))
    svg_path.write_text(svg(events))
    return cast_path, svg_path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    agent = _agent()
    ap.add_argument(
        "data", nargs="?", default=str(agent.DEFAULT_DATA), help="LoCoMo JSON (default: %(default)s)"
    )
    ap.add_argument("--url", default="http://127.0.0.1:8000")
    ap.add_argument("--key", required=True, help="API key with memory:write and admin")
    ap.add_argument("--questions", type=int, default=2)
    ap.add_argument("--budget", type=int, default=256)
    ap.add_argument("--idle", type=float, default=2.0, help="longest pause kept in the recording (seconds)")
    ap.add_argument("--out", default=str(OUT), help="directory for the .cast and .svg (default: %(default)s)")
    args = ap.parse_args(argv)
    if not Path(args.data).is_file():
        sys.stderr.write(
            f"error: {args.data} not found: the demo needs a LoCoMo conversations file "
            "(locomo_dev.json in ../shared/bench/locomo, or give its path)\n"
        )
        return 2
    code, events = record(
        args.data,
        args.url,
        args.key,
        questions=args.questions,
        budget=args.budget,
        idle_s=args.idle,
        echo=True,
    )
    cast_path, svg_path = write(events, Path(args.out))
    print(f"wrote {cast_path} and {svg_path}", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
