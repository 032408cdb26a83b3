"""Spool directories are checked where they come in: a clear ConfigError, never a surprise."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import lelog
from lelog._exceptions import ConfigError
from lelog._spool import check_spool_dir
from tests.helpers import dead_url
from tests.test_recover import _env, _lelog


def test_check_spool_dir_takes_paths_and_none() -> None:
    assert check_spool_dir(None) is None
    assert check_spool_dir("/var/spool/lelog") == "/var/spool/lelog"
    assert check_spool_dir(Path("relative/spool")) == "relative/spool"
    assert check_spool_dir(" leading space") == " leading space"  # a legal name, kept as given


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_an_empty_or_blank_spool_dir_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError, match="spool_dir is empty: give a directory, or leave spool_dir unset"):
        check_spool_dir(value)
    with pytest.raises(ConfigError, match="LELOG_SPOOL_DIR is empty"):
        check_spool_dir(value, "LELOG_SPOOL_DIR")


@pytest.mark.parametrize(
    ("value", "says"),
    [("spool\0dir", "holds a NUL byte"), (5, "not int"), (b"/var/spool", "not bytes"), (["d"], "not list")],
)
def test_what_cannot_be_a_directory_is_a_config_error(value: object, says: str) -> None:
    with pytest.raises(ConfigError, match=f"spool_dir .*{says}"):
        check_spool_dir(value)


@pytest.mark.parametrize("value", [" ", "spool\0dir"])
def test_a_writer_refuses_a_bad_spool_dir_when_it_is_built(tmp_path: Path, value: str) -> None:
    with pytest.raises(ConfigError, match="spool_dir"):
        lelog.StreamWriter("k", lelog.FileStore(tmp_path), spool_dir=value)
    assert not (Path.cwd() / " ").exists()  # nothing named " " was made


@pytest.mark.parametrize("value", ["", "  "])
def test_an_empty_lelog_spool_dir_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str
) -> None:
    monkeypatch.setenv("LELOG_SPOOL_DIR", value)
    with pytest.raises(ConfigError, match="LELOG_SPOOL_DIR is empty"):
        lelog.StreamWriter("k", lelog.FileStore(tmp_path))


def test_a_blank_runtime_dir_is_a_config_error_for_a_writer_with_a_spool(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("LELOG_RUNTIME_DIR", " ")
    with pytest.raises(ConfigError, match="LELOG_RUNTIME_DIR is empty"):
        lelog.StreamWriter("k", lelog.FileStore(tmp_path), spool_dir=str(tmp_path / "spool"))


# -- the command -----------------------------------------------------------------------------------


def test_recover_of_a_missing_spool_directory_fails_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    for how in (["--spool", str(missing)], []):
        env = _env(LELOG_TOKEN="t", **({} if how else {"LELOG_SPOOL_DIR": str(missing)}))
        result = _lelog("recover", *how, "--url", dead_url(), "--account-id", "acct", env=env)
        assert result.returncode == 2, result
        assert f"the spool directory {missing}" in result.stderr and "does not exist" in result.stderr
        assert result.stdout == ""
    result = _lelog("recover", "--spool", str(missing), env=_env(LELOG_HOME=str(tmp_path)))
    assert result.returncode == 2 and "does not exist" in result.stderr  # the file store too


@pytest.mark.parametrize("value", ["", " "])
def test_recover_refuses_an_empty_spool_directory(tmp_path: Path, value: str) -> None:
    result = _lelog("recover", "--spool", value, env=_env(LELOG_HOME=str(tmp_path)))
    assert result.returncode == 2 and "--spool is empty" in result.stderr
    result = _lelog("recover", env=_env(LELOG_HOME=str(tmp_path), LELOG_SPOOL_DIR=value))
    assert result.returncode == 2 and "LELOG_SPOOL_DIR is empty" in result.stderr


def test_recover_refuses_a_blank_runtime_dir(tmp_path: Path) -> None:
    result = _lelog("recover", env=_env(LELOG_HOME=str(tmp_path), LELOG_RUNTIME_DIR=""))
    assert result.returncode == 2 and "LELOG_RUNTIME_DIR is empty" in result.stderr


def test_lelog_run_refuses_a_blank_spool(tmp_path: Path) -> None:
    result = _lelog("run", "--spool", " ", "--home", str(tmp_path), "--key", "k", "--", "true", env=_env())
    assert result.returncode == 2 and "spool_dir is empty" in result.stderr
    assert not os.path.exists(tmp_path / " ")
