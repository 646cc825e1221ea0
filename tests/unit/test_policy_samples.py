"""`wimse-authz policy samples`: the installed sample policies copied out or located. Here, in
a checkout, the samples are policies/ itself; tests/e2e/test_wheel.py runs the same command
from an installed wheel."""

from __future__ import annotations

from pathlib import Path

import pytest

from authz.cli import main
from authz.devtools.stack import POLICY_DIR
from authz.policy.samples import SamplesExistError, copy_samples

ENTRY_POLICY = Path("envoy") / "authz.rego"


def files_under(directory: Path) -> list[Path]:
    return sorted(path for path in directory.rglob("*") if path.is_file())


def test_samples_copied_out_pass_their_rego_tests(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    assert main(["policy", "samples", "--out", str(out)]) == 0
    assert f"wimse-authz policy test {out}" in capsys.readouterr().out
    assert (out / ENTRY_POLICY).read_bytes() == (POLICY_DIR / ENTRY_POLICY).read_bytes()
    assert main(["policy", "test", str(out)]) == 0
    assert "FAIL" not in capsys.readouterr().out


def test_samples_do_not_replace_existing_files_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    edited = out / ENTRY_POLICY
    edited.parent.mkdir(parents=True)
    edited.write_text("package envoy.authz\n")
    assert main(["policy", "samples", "--out", str(out)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"wimse-authz policy samples: {edited} exists; --force overwrites"
    ]
    assert files_under(out) == [edited], "a refused copy writes nothing"
    assert edited.read_text() == "package envoy.authz\n"

    assert main(["policy", "samples", "--out", str(out), "--force"]) == 0
    assert edited.read_bytes() == (POLICY_DIR / ENTRY_POLICY).read_bytes()


def test_samples_are_not_written_through_a_dangling_symlink(tmp_path: Path) -> None:
    out = tmp_path / "mine"
    elsewhere = tmp_path / "elsewhere.rego"
    (out / ENTRY_POLICY).parent.mkdir(parents=True)
    (out / ENTRY_POLICY).symlink_to(elsewhere)
    with pytest.raises(SamplesExistError):
        copy_samples(out)
    assert not elsewhere.exists()


def test_samples_into_a_file_is_one_line_and_a_non_zero_exit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_directory = tmp_path / "policies"
    not_a_directory.write_text("")
    assert main(["policy", "samples", "--out", str(not_a_directory)]) == 2
    assert capsys.readouterr().err == (
        f"wimse-authz policy samples: {not_a_directory} is not a directory\n"
    )


def test_samples_path_in_a_checkout_is_its_policies_directory(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["policy", "samples", "--path"]) == 0
    assert Path(capsys.readouterr().out.strip()) == POLICY_DIR.resolve()
