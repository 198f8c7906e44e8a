"""``napari-samrefine models``: the registry, each model's profile, the cache folder."""

from __future__ import annotations

__all__ = ["add_models_parser", "run_models"]


def add_models_parser(sub):
    """Add the ``models`` subcommand to the parser's subparsers; returns its parser."""
    p = sub.add_parser(
        "models", help="list the registered SAM checkpoints and the cache folder",
        description="List the registered SAM checkpoints (with each one's prompt profile) and "
        "the cache folder (NAPARI_SAMREFINE_CACHE).",
    )
    p.set_defaults(func=run_models)
    return p


def run_models(args) -> int:
    """Print the registry; returns 0."""
    from napari_samrefine.models import registry
    from napari_samrefine.models.download import model_cache_dir

    for name in registry.list_models():
        entry = registry.get_model(name)
        print(f"{name:22s} {entry.description}")
        print(f"{'':22s}   {entry.profile.summary()}")
    print(f"cache folder: {model_cache_dir()}")
    return 0


