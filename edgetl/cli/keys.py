"""`edgetl keys`: the Ed25519 key that signs this user's bundles (`edgetl.deploy.signing`)."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option


@click.group(short_help="The key that signs your bundles: create it, show its public part.")
def keys():
    """Bundles are signed with your Ed25519 key; devices trust the public keys in ROOT/trusted-keys/."""


@keys.command("init", short_help="Create the signing key (kept if it exists).")
@click.option("--force", is_flag=True, help="Replace an existing key: devices that trust the old one will refuse "
              "bundles signed with the new one until you add it to their trusted-keys/.")
@json_option
def init(force):
    from edgetl.console import say
    from edgetl.deploy.signing import init_key, key_folder

    result = init_key(force=force)
    say(f"{'created' if result['created'] else 'kept'} the signing key {result['key_id']} in {key_folder()} "
        "(the private key never leaves this folder)")
    return result


@keys.command("show", short_help="Print the public key and its id (to put on a device by hand).")
@json_option
def show():
    from edgetl.console import say
    from edgetl.deploy.signing import TRUSTED_KEYS, public_key

    result = public_key()
    say(f"key {result['key_id']}: copy it to ROOT/{TRUSTED_KEYS}/{result['key_id']}.pem on a device")
    say(result["public_pem"].rstrip())
    return result
