"""`edgetl keys`: the Ed25519 key that signs this user's bundles (`edgetl.deploy.signing`)."""

from __future__ import annotations

import click

from edgetl.cli.common import json_option


@click.command(short_help="The key that signs your bundles: create it (init) or print its public part (show).")
@click.argument("action", type=click.Choice(["init", "show"]), default="show")
@click.option("--force", is_flag=True, help="With init: replace an existing key. Devices that trust the old one "
              "refuse bundles signed with the new one until it is in their trusted-keys/.")
@json_option
def keys(action, force):
    """Bundles are signed with your Ed25519 key (created by `init`, or by the first deploy that needs it);
    devices trust the public keys in ROOT/trusted-keys/. `show` prints the public key and its id."""
    from edgetl.console import say
    from edgetl.deploy.signing import TRUSTED_KEYS, init_key, key_folder, public_key

    if action == "init":
        result = init_key(force=force)
        say(f"{'created' if result['created'] else 'kept'} the signing key {result['key_id']} in {key_folder()} "
            "(the private key never leaves this folder)")
        return result
    result = public_key()
    say(f"key {result['key_id']}: copy it to ROOT/{TRUSTED_KEYS}/{result['key_id']}.pem on a device")
    say(result["public_pem"].rstrip())
    return result
