"""The command line itself, in-process: every command's help, the shared options, the deploy flags' parsing.

Nothing here trains, exports or installs: the deploy library functions are replaced where a test only
checks what the command line hands them.
"""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

from edgetl.cli import cli
from edgetl.cli.common import CountType, DropType, fail, json_option
from edgetl.deploy.target import LocalTarget, SshTarget
from edgetl.errors import CheckFailedError, UnknownNameError


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


COMMANDS = list(_commands(cli))


@pytest.mark.parametrize("path", [path for path, _ in COMMANDS], ids=" ".join)
def test_every_commands_help_renders(path):
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output and "--help" in result.output


@pytest.mark.parametrize("path,command", COMMANDS, ids=[" ".join(path) for path, _ in COMMANDS])
def test_every_command_shares_the_same_options(path, command):
    options = {param.name: param for param in command.params if isinstance(param, click.Option)}
    assert "as_json" in options and "quiet" in options and "-q" in options["quiet"].opts, path
    for option in options.values():
        if option.hidden or option.name == "help":
            continue
        assert option.help, f"{' '.join(path)} {option.opts[0]} has no help"
        if option.multiple:
            assert "repeatable" in option.help.lower(), f"{' '.join(path)} {option.opts[0]}"
    if "threads" in options:
        assert isinstance(options["threads"].type, CountType)
        assert options["threads"].help.startswith("Inference threads: N >= 1")
    if "max_drop" in options:
        assert isinstance(options["max_drop"].type, DropType) and "'none'" in options["max_drop"].help


def test_counts_and_drops_parse_one_way():
    assert CountType().convert("4", None, None) == 4
    assert CountType(sweep=True).convert("1,2,2,4", None, None) == [1, 2, 4]
    assert CountType(best=True).convert("best", None, None) == "best"
    for kind, bad in ((CountType(), "0"), (CountType(), "1,2"), (CountType(), "best"), (CountType(sweep=True), "x"),
                      (CountType(best=True), "-1"), (CountType(), "²")):
        with pytest.raises(click.BadParameter):
            kind.convert(bad, None, None)
    assert DropType().convert("0.5", None, None) == 0.5 and DropType().convert("None", None, None) is None
    for bad in ("-1", "lots", "nan"):
        with pytest.raises(click.BadParameter):
            DropType().convert(bad, None, None)


def test_deploy_device_is_a_hidden_alias_of_profile_that_warns():
    assert "--device" not in CliRunner().invoke(cli, ["deploy", "--help"]).output
    result = CliRunner().invoke(cli, ["deploy", "runs/x", "--device", "no-such-profile", "--local", "box"])
    assert isinstance(result.exception, UnknownNameError) and "no-such-profile" in result.exception.message
    warning = [line for line in result.stderr.splitlines() if "--profile" in line]
    assert warning == ["warning: `deploy --device` is now --profile: use --profile no-such-profile"]
    plain = CliRunner().invoke(cli, ["deploy", "runs/x", "--profile", "no-such-profile", "--local", "box"])
    assert isinstance(plain.exception, UnknownNameError) and "--profile" not in plain.stderr


SSH_FLAGS = ["--host", "pi@cam-1", "--port", "2222", "--identity", "key", "--known-hosts", "kh",
             "--accept-new-host-key", "--python", "/usr/bin/python3.11", "--timeout", "3"]
SSH_TARGET = SshTarget(host="cam-1", user="pi", port=2222, identity="key", known_hosts="kh", accept_new_host_key=True,
                       python="/usr/bin/python3.11", timeout=3.0)


def test_rollback_over_ssh_reaches_the_device_with_every_flag_and_python(monkeypatch):
    from edgetl.deploy import actions

    seen = []

    def roll_back(target):
        seen.append(target)
        return {"host": target.name, "path": target.path, "release": "b", "previous_release": "a", "service": "-"}

    monkeypatch.setattr(actions, "roll_back", roll_back)
    result = CliRunner().invoke(cli, ["deploy", "--rollback", *SSH_FLAGS, "--path", "/opt/edgetl", "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [SshTarget(**{**SSH_TARGET.__dict__, "path": "/opt/edgetl"})]
    assert json.loads(result.stdout)["host"] == "pi@cam-1:2222"
    local = CliRunner().invoke(cli, ["deploy", "--rollback", "--local", "box"])
    assert local.exit_code == 0 and seen[-1] == LocalTarget("box")


def test_pick_over_ssh_gets_the_same_target_with_the_profiles_install_path(monkeypatch):
    from edgetl.deploy import pick
    from edgetl.deploy.profiles import get_profile

    seen = []

    def pick_fastest(source, profile, target, samples, threads, max_drop, camera_env):
        seen.append((target, threads, max_drop))
        assert camera_env is None
        return {"host": target.name, "pick": {"measured": [], "chosen": None, "left_out": []}}

    monkeypatch.setattr(pick, "pick_fastest", pick_fastest)
    result = CliRunner().invoke(cli, ["deploy", "runs/x", "--profile", "rpi5", *SSH_FLAGS, "--pick", "fastest",
                                      "--threads", "best", "--max-drop", "none"])
    assert result.exit_code == 0, result.output
    path = get_profile("rpi5").install_path
    assert seen == [(SshTarget(**{**SSH_TARGET.__dict__, "path": path}), "best", None)]


def test_a_failure_through_the_json_option_prints_its_result_then_raises():
    @click.command()
    @json_option
    def broken():
        fail(CheckFailedError("it failed"), {"done": 1})

    result = CliRunner().invoke(broken, ["--json"])
    assert json.loads(result.stdout) == {"done": 1} and isinstance(result.exception, CheckFailedError)
    quiet = CliRunner().invoke(broken, [])
    assert quiet.stdout == "" and isinstance(quiet.exception, CheckFailedError)
