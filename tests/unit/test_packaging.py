"""What the wheel promises: typed packages and the license pyproject.toml names."""

from __future__ import annotations

import tomllib

from tests.support import REPO


def _project() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_every_packaged_package_is_marked_typed() -> None:
    packages = _project()["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    assert set(packages) == {"hub", "agent", "runtimes", "protos", "simulators"}
    missing = [p for p in packages if not (REPO / p / "py.typed").is_file()]
    assert not missing, f"no py.typed marker in {missing} (PEP 561: type checkers ignore the package's hints)"


def test_license_file_is_the_full_license_pyproject_names() -> None:
    project = _project()["project"]
    assert project["license"] == "Apache-2.0" and project["license-files"] == ["LICENSE"]
    text = (REPO / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text  # the full text, not a pointer to it
