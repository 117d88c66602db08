"""CLI command modules. Each exposes ``register(app)``; imports of heavy libraries stay inside
command functions so ``bench --help`` and ``bench ls`` start fast."""
