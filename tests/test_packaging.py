"""The release package: metadata in setup.cfg, LICENSE, one version, the sdist and wheel contents, the docs' links.

`make package` builds and checks the same artefacts with twine; `make docs` builds the documentation strictly.
"""

from __future__ import annotations

import configparser
import importlib.util
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import lightning_supcon

ROOT = Path(__file__).resolve().parents[1]


def setup_cfg() -> configparser.ConfigParser:
    config = configparser.ConfigParser(interpolation=None)
    config.read(ROOT / "setup.cfg")
    return config


def cfg_list(value: str) -> list[str]:
    return [line.strip() for line in value.strip().splitlines() if line.strip()]


def all_requirements() -> list[Requirement]:
    options = setup_cfg()["options"]
    lines = cfg_list(options["install_requires"])
    for value in setup_cfg()["options.extras_require"].values():
        lines += cfg_list(value)
    return [Requirement(line) for line in lines]


def invalid_classifiers(classifiers: list[str]) -> list[str]:
    """The classifiers PyPI would refuse: unknown to ``trove-classifiers`` or deprecated."""
    from trove_classifiers import classifiers as known
    from trove_classifiers import deprecated_classifiers

    return [c for c in classifiers if c not in known or c in deprecated_classifiers]


class TestMetadata:
    def test_every_classifier_is_valid(self) -> None:
        classifiers = cfg_list(setup_cfg()["metadata"]["classifiers"])
        assert classifiers
        assert invalid_classifiers(classifiers) == []

    def test_the_check_refuses_a_made_up_classifier(self) -> None:
        # The classifier setup.cfg had before the first release: PyPI has no PyTorch framework classifier.
        assert invalid_classifiers(["Framework :: Pytorch", "Typing :: Typed"]) == ["Framework :: Pytorch"]

    def test_license_file_matches_the_license_expression(self) -> None:
        metadata = setup_cfg()["metadata"]
        assert metadata["license_expression"] == "Apache-2.0"
        assert cfg_list(metadata["license_files"]) == ["LICENSE"]
        assert "license" not in metadata  # the legacy free-text field would repeat (and could contradict) it
        assert not [c for c in cfg_list(metadata["classifiers"]) if c.startswith("License ::")]  # PEP 639
        text = (ROOT / "LICENSE").read_text()
        assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
        assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text

    def test_typed_classifier_has_its_marker(self) -> None:
        assert "Typing :: Typed" in setup_cfg()["metadata"]["classifiers"]
        assert (ROOT / "lightning_supcon" / "py.typed").is_file()
        assert "py.typed" in setup_cfg()["options.package_data"]["lightning_supcon"]

    @pytest.mark.parametrize("requirement", all_requirements(), ids=str)
    def test_no_dependency_is_capped_at_a_patch_release(self, requirement: Requirement) -> None:
        # `torch<=2.14.1` would refuse torch 2.14.2 and 2.15; a cap, where one is needed, names a major or minor
        # release that is known to break (`pytorch-lightning<2.7`).
        for spec in requirement.specifier:
            assert spec.operator not in ("<=", "==", "===", "~="), f"{requirement}: {spec} caps a release"
            if spec.operator == "<":
                assert len(Version(spec.version).release) <= 2, f"{requirement}: {spec} is a patch-level cap"

    @pytest.mark.parametrize("name", ["torch", "torchvision"])
    def test_torch_has_no_upper_bound(self, name: str) -> None:
        (requirement,) = [r for r in all_requirements() if r.name == name and not r.marker]
        assert all(spec.operator == ">=" for spec in requirement.specifier), str(requirement)


class TestVersion:
    def test_setup_cfg_reads_the_package_version(self) -> None:
        assert setup_cfg()["metadata"]["version"] == "attr: lightning_supcon.__version__"
        assert "version" not in (ROOT / "pyproject.toml").read_text().split("[build-system]")[0]

    def test_version_is_pep440(self) -> None:
        assert str(Version(lightning_supcon.__version__)) == lightning_supcon.__version__

    def test_changelog_starts_with_this_version(self) -> None:
        headings = re.findall(r"^## \[?([^\]\s]+)\]?", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
        assert headings[0] == lightning_supcon.__version__


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The sdist and the wheel built from it, as `make package` builds them (no build isolation, offline)."""
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (sdist,) = out.glob("*.tar.gz")
    (wheel,) = out.glob("*.whl")
    return sdist, wheel


def source_files(pattern: str) -> set[str]:
    return {p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern) if "__pycache__" not in p.parts}


class TestArtefacts:
    def test_names_carry_the_package_version(self, artefacts: tuple[Path, Path]) -> None:
        sdist, wheel = artefacts
        version = lightning_supcon.__version__
        assert sdist.name == f"lightning_supcon-{version}.tar.gz"
        assert wheel.name == f"lightning_supcon-{version}-py3-none-any.whl"
        with zipfile.ZipFile(wheel) as archive:
            metadata = archive.read(f"lightning_supcon-{version}.dist-info/METADATA").decode()
        assert f"\nVersion: {version}\n" in metadata
        assert "\nLicense-Expression: Apache-2.0\n" in metadata

    def test_wheel_holds_the_package_and_license_only(self, artefacts: tuple[Path, Path]) -> None:
        _, wheel = artefacts
        with zipfile.ZipFile(wheel) as archive:
            names = set(archive.namelist())
        top = {name.split("/")[0] for name in names}
        assert top == {"lightning_supcon", f"lightning_supcon-{lightning_supcon.__version__}.dist-info"}
        assert source_files("lightning_supcon/**/*.py") | {"lightning_supcon/py.typed"} <= names
        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
        assert not [name for name in names if name.startswith("tests/") or "__pycache__" in name]

    def test_sdist_holds_what_make_test_needs(self, artefacts: tuple[Path, Path]) -> None:
        sdist, _ = artefacts
        with tarfile.open(sdist) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        expected = {"README.md", "LICENSE", "CHANGELOG.md", "Makefile", "mkdocs.yml", "setup.cfg", "pyproject.toml"}
        expected |= source_files("lightning_supcon/**/*.py") | source_files("tests/**/*.py")
        expected |= source_files("configs/**/*.yaml") | source_files("docs/**/*.md") | source_files("benchmarks/*")
        assert expected - names == set()
        assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]


def load_docs_hook() -> ModuleType:
    path = ROOT / "docs" / "hooks" / "griffe_docstrings.py"
    spec = importlib.util.spec_from_file_location("griffe_docstrings", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class TestDocs:
    def test_docstrings_read_as_markdown(self) -> None:
        rewrite = load_docs_hook().markdown_docstring
        text = "See :class:`~lightning_supcon.SupConLoss` and :func:`a.b.f`.\n\nExample:\n    >>> 1\n    1\n"
        assert rewrite(text) == "See `SupConLoss` and `a.b.f`.\n\nExamples:\n    >>> 1\n    1\n"
        assert rewrite("In YAML::\n\n    a: 1") == "In YAML:\n\n    a: 1"
        assert rewrite("An example: here") == "An example: here"

    @pytest.mark.parametrize("page", ["README.md", "CHANGELOG.md"])
    def test_relative_links_resolve(self, page: str) -> None:
        # mkdocs --strict checks the links inside docs/; the README and the changelog live outside it.
        text = (ROOT / page).read_text()
        targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
        local = [t for t in targets if not re.match(r"[a-z]+://", t)]
        assert [t for t in local if not (ROOT / t).exists()] == []

    def test_every_docs_page_is_in_the_navigation(self) -> None:
        # Without a `nav:` list mkdocs puts every page in the navigation; with one, each page must be named in it.
        config = (ROOT / "mkdocs.yml").read_text()
        pages = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
        if re.search(r"^nav:", config, re.MULTILINE):
            assert {page for page in pages if page not in config} == set()

    def test_readme_links_every_docs_page_of_the_release(self) -> None:
        readme = (ROOT / "README.md").read_text()
        for page in ("docs/getting-started.md", "docs/results.md", "docs/performance.md", "docs/configs.md"):
            assert f"({page})" in readme
        assert "(docs/api/index.md)" in readme


def api_directives() -> set[str]:
    """The objects the API pages render: every ``::: dotted.path`` line in docs/api/*.md."""
    pages = (ROOT / "docs" / "api").glob("*.md")
    return {m for page in pages for m in re.findall(r"^::: ([\w.]+)\s*$", page.read_text(), re.MULTILINE)}


class TestApiReference:
    def test_every_top_level_module_has_a_page(self) -> None:
        # A new subpackage or module of lightning_supcon needs a docs/api page (and a row in docs/api/index.md).
        package = ROOT / "lightning_supcon"
        modules = {p.stem for p in package.glob("*.py")} | {p.parent.name for p in package.glob("*/__init__.py")}
        modules -= {"__init__", "__main__"}
        assert {f"lightning_supcon.{name}" for name in modules} - api_directives() == set()

    def test_every_top_level_name_is_rendered(self) -> None:
        # Rendered where its module is documented, or where a documented package lists it in ``__all__``.
        directives = api_directives()
        exported = {d: set(getattr(importlib.import_module(d), "__all__", ())) for d in directives}
        missing = [
            name
            for name in lightning_supcon.__all__
            if getattr(lightning_supcon, name).__module__ not in directives
            and not any(name in names for names in exported.values())
        ]
        assert missing == []

    def test_index_lists_every_page(self) -> None:
        index = (ROOT / "docs" / "api" / "index.md").read_text()
        pages = {p.name for p in (ROOT / "docs" / "api").glob("*.md")} - {"index.md"}
        assert {page for page in pages if f"]({page})" not in index} == set()
