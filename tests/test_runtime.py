"""The runtime directory where lelog's processes meet: placed, created private, checked."""

from __future__ import annotations

import os
import stat
import tempfile
from pathlib import Path

import pytest

from lelog._exceptions import ConfigError
from lelog._runtime import RUNTIME_DIR_ENV, runtime_dir


@pytest.fixture(autouse=True)
def _no_placement(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test places the directory itself; the fallback goes below the test's own temp dir."""
    monkeypatch.delenv(RUNTIME_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()


def test_the_override_is_created_private(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    place = tmp_path / "deep" / "run"
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(place))
    old = os.umask(0)
    try:
        assert runtime_dir() == str(place)
    finally:
        os.umask(old)
    assert stat.S_IMODE(place.stat().st_mode) == 0o700
    assert runtime_dir() == str(place)  # and taken as it is the next time


@pytest.mark.parametrize("value", ["", "   ", "\t"])
def test_an_empty_override_is_a_config_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(RUNTIME_DIR_ENV, value)
    with pytest.raises(ConfigError, match=f"{RUNTIME_DIR_ENV} is empty: give a directory"):
        runtime_dir()


def test_xdg_runtime_dir_is_used_when_it_is_the_users(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    xdg = tmp_path / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert runtime_dir() == str(xdg / "lelog")


@pytest.mark.parametrize("xdg", ["relative/path", "/no/such/directory"])
def test_an_unusable_xdg_runtime_dir_falls_back_to_the_temp_dir(
    monkeypatch: pytest.MonkeyPatch, xdg: str
) -> None:
    monkeypatch.setenv("XDG_RUNTIME_DIR", xdg)
    assert runtime_dir() == os.path.join(tempfile.gettempdir(), f"lelog-{os.getuid()}")


def test_the_fallback_is_per_user_below_the_temp_dir() -> None:
    path = runtime_dir()
    assert path == os.path.join(tempfile.gettempdir(), f"lelog-{os.getuid()}")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_a_symlink_is_refused_naming_the_path_and_the_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    planted = Path(tempfile.gettempdir()) / f"lelog-{os.getuid()}"
    planted.symlink_to(real)
    with pytest.raises(ConfigError, match="is a symbolic link") as err:
        runtime_dir()
    assert str(planted) in str(err.value) and RUNTIME_DIR_ENV in str(err.value)


def test_a_directory_others_can_write_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    place = tmp_path / "open"
    place.mkdir()
    place.chmod(0o777)
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(place))
    with pytest.raises(ConfigError, match="writable by others .mode 0777.; chmod 700 it"):
        runtime_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="making a directory another user owns needs root")
def test_a_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    planted = Path(tempfile.gettempdir()) / f"lelog-{os.getuid()}"
    planted.mkdir(mode=0o700)
    os.chown(planted, 12345, -1)
    with pytest.raises(ConfigError, match="belongs to uid 12345, not to this user"):
        runtime_dir()


def test_a_file_in_its_place_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    place = tmp_path / "file"
    place.write_text("")
    monkeypatch.setenv(RUNTIME_DIR_ENV, str(place))
    with pytest.raises(ConfigError, match="is not a directory"):
        runtime_dir()
