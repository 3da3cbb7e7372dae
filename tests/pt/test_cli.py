"""The command line itself: its version, and help that states every default."""
import pytest

from onebyone.cli import main


def test_version_and_help_texts(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.startswith("onebyone 0.")
    for command, flags in (("train", ("--batch-size", "--lr", "--seed")),
                           ("summary", ("--batch-size", "--json", "--csv"))):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        for flag in flags:
            line = text.split("options:", 1)[1].split(flag, 1)[1][:160]
            assert "default" in line or "instead" in line, (command, flag, line)
