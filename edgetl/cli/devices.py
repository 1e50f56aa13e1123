"""`edgetl devices [list|show NAME]`: the device profiles."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option, table


@click.command(short_help="List device profiles, or show one (devices/*.yaml).")
@click.argument("action", type=click.Choice(["list", "show"]), default="list")
@click.argument("name", required=False)
@json_option
def devices(action, name):
    """List the device profiles, or show one: architecture, Python, wheel tags, what it runs and how."""
    from edgetl.console import say
    from edgetl.deploy.profiles import get_profile, list_profiles
    from edgetl.errors import BadInputError

    if action == "show":
        if not name:
            raise BadInputError("`edgetl devices show` needs a profile NAME", "`edgetl devices list` shows them")
        profile = get_profile(name)
        data = profile.to_dict()
        table(f"device profile {name}", ["field", "value"], [
            ["description", profile.description], ["arch / python", f"{profile.arch} / Python {profile.python}"],
            ["runs", ", ".join(f"{t.format} {t.precision}" for t in profile.targets)],
            ["runtime", f"{profile.runtime.get('package')} {profile.runtime.get('version', '')}"],
            ["threads / device", f"{profile.threads} / {profile.execution_device}"],
            ["camera", f"{profile.camera.get('pipeline')}: {profile.camera.get('source')}"],
            ["install", f"{profile.install_path} as {profile.service_user}"],
            ["wheel tags", ", ".join(profile.platform_tags)],
        ])
        if profile.tensorrt:
            say(f"TensorRT engine built on the device: {profile.tensorrt.get('build')}")
        return data
    profiles = [get_profile(n) for n in list_profiles()]
    table("device profiles", ["name", "arch", "python", "runs", "runtime", "threads", "camera"], [
        [p.name, p.arch, p.python, f"{p.preferred.format} {p.preferred.precision}", p.runtime.get("package"),
         p.threads, p.camera.get("pipeline")] for p in profiles])
    return {"devices": [p.to_dict() for p in profiles]}
