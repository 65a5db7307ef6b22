"""Subcommand flags are generated from the config dataclasses and mean the same as KEY=VALUE overrides."""

from __future__ import annotations

import yaml


def test_flags_set_config_fields_of_any_registered_method(capsys):
    from spul.interfaces.cli import main

    assert main(["config", "--unlearn.method", "npo", "--unlearn.beta", "0.2", "--model.dtype", "float32",
                 "--evaluation.splits", "test_forget", "test_retain"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["unlearn"]["method"] == "npo" and cfg["unlearn"]["beta"] == 0.2
    assert cfg["model"]["dtype"] == "float32" and cfg["evaluation"]["splits"] == ["test_forget", "test_retain"]


def test_a_flag_the_method_does_not_have_is_a_one_line_error(capsys):
    from spul.interfaces.cli import main

    assert main(["config", "--unlearn.method", "ga", "--unlearn.alpha", "1"]) != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("spul: error:") and "unlearn.alpha" in err and len(err.splitlines()) == 1


def test_help_texts_come_from_field_metadata():
    from spul.interfaces.cli import build_parser

    parser = build_parser()
    run = parser._subparsers._group_actions[0].choices["run"]
    helps = {a.option_strings[0]: a.help for a in run._actions if a.option_strings}
    assert "retain cross-entropy" in helps["--unlearn.alpha"]
    owners = helps["--unlearn.alpha"].rsplit("[", 1)[1].rstrip("]").split(", ")
    assert "spul" in owners and set(owners) <= {"spul", "spul_gated"}  # only SPUL (and gated SPUL, its subclass) has α
    audit = parser._subparsers._group_actions[0].choices["audit"]
    assert any(a.option_strings == ["--audit.limit"] for a in audit._actions)
