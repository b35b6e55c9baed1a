"""``ssl-zoo datasets``: every dataset name with the layout it expects; inspect or check a local copy."""
from __future__ import annotations

import argparse
import sys
import textwrap

from ..parsers.datasets import configure_parser


def _print_listing() -> None:
    from .registry import get_dataset_info, list_datasets

    for name in list_datasets():
        info = get_dataset_info(name)
        print(f"{name}  [splits: {', '.join(info.splits)}]  {info.description}")
        print(textwrap.indent(info.layout.strip("\n"), "    "))
        print()


def run_cli(args: argparse.Namespace) -> int:
    from ..errors import report_user_error
    from .base import DatasetLayoutError
    from .registry import UnknownDatasetError, create_dataset, get_dataset_info

    if args.name is None:
        if args.data or args.check:
            print("Name the dataset: ssl-zoo datasets NAME --data DIR", file=sys.stderr)
            return 2
        _print_listing()
        return 0
    try:
        info = get_dataset_info(args.name)
    except UnknownDatasetError as exc:  # caught here too: tests and scripts call run_cli directly
        return report_user_error(exc)
    print(f"{info.name}: {info.description}\nsplits: {', '.join(info.splits)}\nlayout under root:")
    print(textwrap.indent(info.layout.strip("\n"), "    "))
    if args.data is None and info.reads_folder:  # an embedded dataset shows its contents without --data
        return 0
    splits = [args.split] if args.split else list(info.splits)
    status = 0
    loaded: list[str] = []
    for split in splits:
        try:
            ds = create_dataset(info.name, args.data, split=split)
        except (DatasetLayoutError, ValueError, KeyError) as exc:
            if info.name == "imagefolder" and split != "train" and "train" in loaded and not args.split:
                # a flat class-folder tree has only 'train': not an error, and eval can hold out a test part
                print(f"\n[{split}] none: the class folders sit directly under the root, which is the 'train' "
                      f"split. `ssl-zoo eval ... --holdout 0.2` holds out a seeded, stratified test part.")
                continue
            print(f"\n[{split}] {exc}", file=sys.stderr)
            status = 1
            continue
        loaded.append(split)
        labelled = sum(t >= 0 for t in ds.targets)
        print(f"\n[{split}] {len(ds)} images ({labelled} labelled), {len(ds.classes)} classes: "
              f"{', '.join(ds.classes[:5])}{' ...' if len(ds.classes) > 5 else ''}")
        if args.check:
            bad = ds.find_unreadable(progress=sys.stderr.isatty())
            for path, err in bad:
                print(f"  unreadable: {path}: {err}")
            print(f"  {len(bad)} unreadable of {len(ds)}")
            status = status or (1 if bad else 0)
    return status


__all__ = ["configure_parser", "run_cli"]
