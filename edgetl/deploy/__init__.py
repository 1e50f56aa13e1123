"""Deploy: device profiles (`devices/*.yaml`) now; bundles, SSH transport, self-test and rollback follow."""
