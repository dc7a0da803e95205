"""The docs say what the code does, and send their readers only to files that exist in the repository."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import lunogram_server
from lunogram_server import config
from lunogram_server.config import SETTINGS_DOC

ROOT = Path(__file__).resolve().parent.parent
REGENERATE = "regenerate with `python -m lunogram_server.config --write`"


def test_docs_configuration_md_is_generated_from_settings_doc() -> None:
    on_disk = (ROOT / "docs" / "configuration.md").read_text()
    assert on_disk == config.render_configuration_doc(), f"docs/configuration.md has drifted: {REGENERATE}"
    for name, default, meaning in SETTINGS_DOC:
        assert f"| `{name}` | {default} | {meaning} |" in on_disk, name


def test_readme_table_is_generated_from_settings_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    assert readme.count(config.README_TABLE_START) == 1
    assert readme.count(config.README_TABLE_END) == 1
    assert config.with_readme_table(readme) == readme, f"the README's settings table has drifted: {REGENERATE}"


def test_the_generator_prints_the_configuration_doc() -> None:
    printed = subprocess.run(
        [sys.executable, "-m", "lunogram_server.config"], capture_output=True, text=True, check=True, timeout=60
    )
    assert printed.stdout == config.render_configuration_doc()


def test_every_setting_read_from_the_environment_is_documented() -> None:
    source = Path(config.__file__).read_text()
    read = set(re.findall(r'env\.get\("((?:LUNOGRAM_|DATABASE_)[A-Z_]+)"', source))
    documented = {name for name, _, _ in SETTINGS_DOC}
    assert read, "no setting found: has load_settings changed shape?"
    assert read == documented, {"undocumented": read - documented, "documented but never read": documented - read}


def _markdown_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "*.md"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    return [ROOT / line for line in listed.stdout.splitlines()]


def test_markdown_links_point_at_files_in_the_repository() -> None:
    missing = []
    for doc in _markdown_files():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (doc.parent / target).exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert missing == []


def test_no_file_refers_to_documents_outside_the_repository() -> None:
    # the design and the contract live in docs/design.md and docs/api.md; nothing may send a reader elsewhere
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    offenders = []
    pattern = re.compile(r"\b(DESIGN\.md|CONTRACT\.md)|/work/shared")
    for name in listed.stdout.splitlines():
        path = ROOT / name
        if path.suffix not in (".md", ".py", ".sql", ".toml", ".sh", "") or not path.is_file():
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if pattern.search(line) and path != Path(__file__).resolve():
                offenders.append(f"{name}:{number}: {line.strip()}")
    assert offenders == []


def test_readme_layout_names_every_package_of_the_server() -> None:
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout") :]
    package_root = Path(lunogram_server.__file__).parent
    packages = sorted(p.name for p in package_root.iterdir() if (p / "__init__.py").exists())
    assert packages, package_root
    missing = [name for name in packages if f"`{name}/`" not in layout]
    assert missing == [], f"the README's layout paragraph omits {missing}"


def test_the_sdk_readme_does_not_claim_to_be_lunograms_own_client() -> None:
    text = (ROOT / "sdk" / "python" / "README.md").read_text().lower()
    assert "official" not in text
    assert "lunogram client api" in text
