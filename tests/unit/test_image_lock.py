"""The Docker image installs its Python packages from a lock that covers pyproject.toml.

deploy/image-requirements.txt (scripts/lock-image.sh) pins one version of every package, with
the hashes of its files; the Dockerfile installs it with --require-hashes and builds the two
projects without fetching anything else. This test fails when pyproject.toml asks for a package,
a version or an extra the lock does not give, so the lock is rewritten with the dependency."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "deploy" / "image-requirements.txt"
# What the image installs: the project with the postgres extra (Dockerfile), built by setuptools.
IMAGE_EXTRAS = ("postgres",)


def locked() -> dict[str, tuple[Version, set[str], list[str]]]:
    """Each locked package: its version, the extras it is locked with, the hashes of its files."""
    entries: dict[str, tuple[Version, set[str], list[str]]] = {}
    # An entry: `name[extras]==version \` and its `--hash=sha256:...` lines (comments aside).
    text = "\n".join(line.split("#")[0].rstrip() for line in LOCK.read_text().splitlines())
    for block in re.split(r"\n(?=\S)", text.strip()):
        if not block.strip():
            continue
        head, *rest = block.replace("\\\n", " ").split()
        match = re.fullmatch(r"([A-Za-z0-9._-]+)(?:\[([A-Za-z0-9_,.-]+)\])?==([^\s;]+)", head)
        assert match, f"not pinned to one version: {head!r}"
        hashes = [item.removeprefix("--hash=sha256:") for item in rest if item.startswith("--hash=sha256:")]
        assert len(rest) == len(hashes), f"{head}: only --hash options may follow: {rest}"
        name = canonicalize_name(match[1])
        assert name not in entries, f"{name} locked twice"
        entries[name] = (Version(match[3]), set((match[2] or "").split(",")) - {""}, hashes)
    return entries


def wanted() -> list[Requirement]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    project = pyproject["project"]
    requirements = [*project["dependencies"], *pyproject["build-system"]["requires"]]
    for extra in IMAGE_EXTRAS:
        requirements += project["optional-dependencies"][extra]
    return [Requirement(requirement) for requirement in requirements]


def test_every_locked_package_has_one_version_and_the_hashes_of_its_files() -> None:
    entries = locked()
    assert len(entries) > 10
    for name, (_, _, hashes) in entries.items():
        assert hashes and all(re.fullmatch(r"[0-9a-f]{64}", digest) for digest in hashes), name


def test_the_lock_gives_every_package_version_and_extra_pyproject_asks_for() -> None:
    entries = locked()
    for requirement in wanted():
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in {LOCK.name}: run scripts/lock-image.sh"
        version, extras, _ = entries[name]
        assert requirement.specifier.contains(version, prereleases=True), f"{name}=={version} is not {requirement}"
        assert requirement.extras <= extras, f"{name} is locked without the extras {requirement.extras - extras}"


def test_the_dockerfile_installs_the_lock_with_hashes_and_fetches_nothing_else() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    installs = [line for line in dockerfile.replace("\\\n", " ").splitlines() if "pip install" in line]
    assert len(installs) == 2, installs
    locked_install, project_install = installs
    assert "COPY deploy/image-requirements.txt" in dockerfile
    assert "--require-hashes" in locked_install and "-r image-requirements.txt" in locked_install
    # The projects: their dependencies are the lock's, their build backend the locked setuptools.
    assert "--no-deps" in project_install and "--no-build-isolation" in project_install
    for extra in IMAGE_EXTRAS:
        assert f".[{extra}]" in project_install
