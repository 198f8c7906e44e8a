"""``napari-samrefine cache info|clear``: see and empty the disk cache of image embeddings.

Downloaded model checkpoints share the cache folder; ``--models`` includes them
(listed by ``info``, deleted by ``clear``). Only files this package wrote are
ever deleted: embedding files, and checkpoints under their registry file names.
"""

from __future__ import annotations

__all__ = ["add_cache_parser", "run_cache"]


def add_cache_parser(sub):
    """Add the ``cache`` subcommand to the parser's subparsers; returns its parser."""
    p = sub.add_parser(
        "cache", help="show or empty the disk cache of image embeddings",
        description="Show (info) or empty (clear) the disk cache of image embeddings: "
        "<cache folder>/embeddings, where the cache folder is NAPARI_SAMREFINE_CACHE or the "
        "user's cache folder. Its size limit is NAPARI_SAMREFINE_EMBEDDING_CACHE_GB "
        "(default 2; 0 turns it off). Downloaded model checkpoints stay unless --models.",
    )
    p.add_argument(
        "action", choices=("info", "clear"),
        help="info: folder, entries, size and limit; clear: delete the stored embeddings",
    )
    p.add_argument(
        "--models", action="store_true",
        help="also the downloaded model checkpoints in the cache folder (info lists them, "
        "clear deletes them; they are downloaded again when next used)",
    )
    p.set_defaults(func=run_cache)
    return p


def run_cache(args) -> int:
    """Print what the cache holds, or empty it; returns 0."""
    from napari_samrefine.engine.disk_cache import (
        clear_embedding_cache,
        embedding_cache_dir,
        embedding_cache_info,
    )
    from napari_samrefine.models.download import format_size

    if args.action == "info":
        print(embedding_cache_info().summary())
        if args.models:
            files = _checkpoints()
            print(f"model checkpoints: {len(files)} ({format_size(sum(s for _, _, s in files))})")
            for name, path, size in files:
                print(f"  {name:22s} {format_size(size):>8s}  {path}")
        return 0
    n, size = clear_embedding_cache()
    print(f"removed {n} embeddings ({format_size(size)}) from {embedding_cache_dir()}")
    if args.models:
        for name, path, size in _checkpoints():
            path.unlink()
            print(f"removed model {name} ({format_size(size)}): {path}")
    return 0


def _checkpoints() -> list:
    """(name, path, bytes) of the registry's downloaded checkpoints present in the cache folder.

    Models that ship inside a Python package are never listed: their file
    belongs to that package.
    """
    from napari_samrefine.models import registry
    from napari_samrefine.models.download import model_cache_dir

    folder = model_cache_dir()
    out = []
    for name in registry.list_models():
        entry = registry.get_model(name)
        path = folder / entry.filename
        if entry.resource is None and path.is_file():
            out.append((name, path, path.stat().st_size))
    return out
