"""The programs behind the `temporal-ciba` command: worker, callback service, codec server."""
