"""The committed journey editor bundle is what its committed sources build.

`npm run build` (console-editor/) writes editor.js and editor.css into the server's static folder and, beside
them, BUILD.json: a sha256 over the sources (console-editor/stamp.mjs says how) and the sha256 of each file
built. Without Node, the first test recomputes both from the repository: a source changed without a rebuild,
or a bundle edited by hand, fails it. With Node (always in CI), the second builds the sources afresh in a
temporary directory and compares the output byte for byte: the build is reproducible.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "console-editor"
BUNDLE = ROOT / "src" / "lunogram_server" / "console" / "static" / "editor"
OUTPUTS = ("editor.js", "editor.css")
REBUILD = "rebuild the editor: cd console-editor && npm ci && npm run build (then commit the result)"


def source_files() -> list[tuple[str, Path]]:
    """(path relative to console-editor/ with '/', file) of every input of the build, sorted by path."""
    named = [SOURCES / name for name in ("package.json", "package-lock.json", "vite.config.js", "stamp.mjs")]
    named += [path for path in (SOURCES / "src").rglob("*") if path.is_file()]
    return sorted((path.relative_to(SOURCES).as_posix(), path) for path in named)


def sources_sha256() -> str:
    lines = "".join(f"{name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n" for name, path in source_files())
    return hashlib.sha256(lines.encode()).hexdigest()


def test_the_committed_bundle_was_built_from_the_committed_sources() -> None:
    build = json.loads((BUNDLE / "BUILD.json").read_text())
    assert build["sources"] == [name for name, _ in source_files()], f"the build's inputs changed: {REBUILD}"
    assert build["sources_sha256"] == sources_sha256(), f"the sources changed since the bundle was built: {REBUILD}"
    for name in OUTPUTS:
        actual = hashlib.sha256((BUNDLE / name).read_bytes()).hexdigest()
        assert build["outputs_sha256"][name] == actual, f"{name} is not what the build wrote: {REBUILD}"


def test_the_bundle_is_self_contained() -> None:
    """One script, no chunks loaded later, nothing fetched from elsewhere, no source map."""
    script = (BUNDLE / "editor.js").read_text()
    assert script.startswith("var LunogramJourneyEditor=")
    assert "sourceMappingURL" not in script
    assert "import(" not in script
    for asset in ("editor.js", "editor.css"):
        text = (BUNDLE / asset).read_text()
        for elsewhere in ("//cdn.", "unpkg.com", "jsdelivr", "googleapis.com"):
            assert elsewhere not in text, f"{asset} refers to {elsewhere}"
    assert sorted(p.name for p in BUNDLE.iterdir()) == ["BUILD.json", "editor.css", "editor.js"]


def _run(command: list[str], cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"


def test_a_fresh_build_gives_the_committed_bytes(tmp_path: Path) -> None:
    npm = shutil.which("npm")
    if npm is None or shutil.which("node") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must check the editor bundle against a fresh build, but Node/npm are missing")
        pytest.skip("Node and npm are not installed: the bundle's hash was checked, a fresh build was not")
    work, out = tmp_path / "console-editor", tmp_path / "out"
    shutil.copytree(SOURCES, work, ignore=shutil.ignore_patterns("node_modules"))
    out.mkdir()
    env = {**os.environ, "EDITOR_OUT_DIR": str(out), "NO_COLOR": "1"}
    _run([npm, "ci", "--no-audit", "--no-fund"], work, env)
    _run([npm, "run", "build"], work, env)
    for name in (*OUTPUTS, "BUILD.json"):
        built, committed = (out / name).read_bytes(), (BUNDLE / name).read_bytes()
        assert built == committed, f"{name}: a fresh build differs from the committed one: {REBUILD}"
