"""``impasto labels MODEL``: the label table of a semantic model, as the model was trained.

The table (class index, name, colour) comes from the model's repository config (written by
``impasto export`` from the weights' metadata), or from a weights file written by
``save_semantic`` when MODEL is a ``.safetensors`` path. Paint label maps with these colours,
or write the index as an 8-bit grey value.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from impasto.runtime.cli import UsageError


def add_commands(sub: argparse._SubParsersAction) -> None:
    """``impasto labels``."""
    p = sub.add_parser(
        "labels",
        help="print the label table (index, name, colour) of a semantic model",
        description="The classes a semantic model knows: each index (the grey value of an index label map), name "
        "and colour (of a colour-coded label map). MODEL is a model of the repository (e.g. semantic_landscape) "
        "or a .safetensors weights file.",
    )
    p.add_argument("model", help="repository model name, or a semantic .safetensors weights file")
    p.add_argument("--repo", default=None, help="model repository folder (default: settings, then ./model_repository)")
    p.add_argument("--json", action="store_true", help='print {"labels": [{"name", "color"}, ...]} (labels.json form)')
    p.set_defaults(func=cmd_labels)


def _table(args: argparse.Namespace):
    from impasto.train.data.labels import LabelError, LabelTable

    if args.model.endswith(".safetensors"):
        from safetensors import safe_open

        path = Path(args.model)
        if not path.is_file():
            raise UsageError(f"weights file '{path}' does not exist")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except Exception as e:  # safetensors raises its own error types on a damaged header
            raise UsageError(f"'{path}' is not a readable safetensors file: {e}") from None
        if "labels" not in meta:
            raise UsageError(f"'{path}' holds no label table: it is not a semantic model's weights")
        text, source = meta["labels"], str(path)
    else:
        from impasto.export.repository import read_model
        from impasto.runtime.config import load_settings

        repo = args.repo or load_settings().repo
        params = read_model(repo, args.model).parameters
        if "impasto.labels" not in params:
            raise UsageError(f"model '{args.model}' in {repo} has no label table: it is not a semantic model")
        text, source = params["impasto.labels"], f"model '{args.model}'"
    try:
        return LabelTable.from_json(text, f"the label table of {source}")
    except LabelError as e:
        raise UsageError(str(e)) from None


def cmd_labels(args: argparse.Namespace) -> int:
    """Print the table: one ``index name #rrggbb`` line per class, or its JSON."""
    table = _table(args)
    if args.json:
        print(json.dumps(json.loads(table.to_json()), indent=1))
        return 0
    width = max(len(name) for name in table.names)
    for i, label in enumerate(table.labels):
        print(f"{i:3d}  {label.name:<{width}}  {label.color}")
    return 0
