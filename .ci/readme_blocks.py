"""Run every executable code block of the README, as a user would, from a folder of a
project that has its own `data` and `experiments` packages (so a name clash would show).

    python .ci/readme_blocks.py README.md WORKDIR

`python` and `bash` blocks run in order, each alone: in a fresh process, in a fresh project
folder under WORKDIR. A block right after `<!-- readme: skip ... -->` is skipped, and `text`
blocks (synopses) are never run.
Also checks that the installed distribution, and a wheel built from the checkout, add the
one top-level name `metalearn`.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

FENCE = re.compile(r"^```(\w*)\s*$")
SKIP = "<!-- readme: skip"


def blocks(text: str) -> list[tuple[int, str, str]]:
    """(line number, language, code) of every fenced block not marked to skip."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m or not m.group(1):
            i += 1
            continue
        start, lang = i, m.group(1)
        j = i + 1
        while not lines[j].startswith("```"):
            j += 1
        previous = next((ln for ln in reversed(lines[:start]) if ln.strip()), "")
        if lang in ("python", "bash") and not previous.startswith(SKIP):
            out.append((start + 1, lang, "\n".join(lines[start + 1 : j]) + "\n"))
        i = j + 1
    return out


def check_top_level(repo: Path) -> None:
    names = importlib.metadata.distribution("metalearn").read_text("top_level.txt").split()
    assert names == ["metalearn"], f"installed top-level names: {names}"
    with tempfile.TemporaryDirectory() as tmp:
        # build from a copy: a build leaves build/ and *.egg-info behind in its source tree
        skip = shutil.ignore_patterns(".git", "*venv*", "runs", "build", "*.egg-info", ".jax-*")
        shutil.copytree(repo, Path(tmp) / "src", ignore=skip)
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", tmp, f"{tmp}/src"],
            check=True,
        )
        (wheel,) = Path(tmp).glob("metalearn-*.whl")
        tops = {n.split("/")[0] for n in zipfile.ZipFile(wheel).namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"metalearn"}, tops
    print(f"one top-level name: metalearn (installed, and in {wheel.name})")


def user_project(folder: Path) -> Path:
    """A fresh project folder with its own `data` and `experiments` packages."""
    for package in ("data", "experiments"):
        (folder / package).mkdir(parents=True, exist_ok=True)
        (folder / package / "__init__.py").write_text(f'"""The user\'s own {package}."""\n')
    return folder


def run_block(lang: str, code: str, cwd: Path) -> tuple[int, float, float]:
    """(exit status, seconds, peak resident memory of the block's processes in MB)."""
    cmd = [sys.executable, "-c", code] if lang == "python" else ["bash", "-euo", "pipefail"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.PIPE, text=True)
    proc.stdin.write("" if lang == "python" else code)
    proc.stdin.close()
    # wait4 gives this child's own resource use (its largest descendant's peak on Linux)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def main(readme: str, workdir: str) -> int:
    repo = Path(readme).resolve().parent
    work = Path(workdir).resolve()
    check_top_level(repo)
    for line, lang, code in blocks(Path(readme).read_text()):
        # each block alone, in a project folder of its own: no block leans on another's files
        status, took, peak = run_block(lang, code, user_project(work / f"block_{line}"))
        if status:
            print(f"README block at line {line} ({lang}) failed with status {status}")
            return 1
        print(f"README block at line {line} ({lang}) ran alone in {took:.0f} s, peak {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(*sys.argv[1:]))
