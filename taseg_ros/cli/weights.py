"""`taseg weights`: the SAM/CLIP weight files the model configs need, their state in models/, and download.

Exit codes: 0 all needed files usable; 1 a needed file is missing, partial or corrupt (or, without
--config, a present file is corrupt); 2 bad arguments (unknown config, ...).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from taseg_ros import weights
from taseg_ros.formatting import human_size, on_terminal
from taseg_ros.model.config import MODEL_CONFIGS, get_config
from taseg_ros.resources import models_dir


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "weights",
        help="list, check and download the weight files (SAM, CLIP) the model configs need",
        description=(
            "List the weight files the model configs need (official names, sizes, sha256, source), "
            "check the copies in the models folder and, with --download, fetch the missing ones "
            "(resumable, checksum-verified). Without --config: the files of every config."
        ),
    )
    parser.add_argument(
        "--config", action="extend", nargs="+", metavar="NAME|FILE",
        help="model config name (tiny, vit_b, vit_l, vit_h) or YAML file; repeatable",
    )
    parser.add_argument(
        "--models-dir", type=Path, default=None, metavar="DIR",
        help="where the weight files live (default: $TASEG_MODELS_DIR, else models/ of the checkout, "
        "else ~/.cache/taseg_ros/models)",
    )
    parser.add_argument("--download", action="store_true", help="download needed files that are missing or bad")
    parser.add_argument(
        "--mirror", metavar="URL", default=None,
        help="fetch URL/<file name> instead of the upstream source (http(s):// or file://; "
        "default: $TASEG_WEIGHTS_MIRROR)",
    )
    parser.add_argument(
        "--inference", action="store_true",
        help="only the files inference needs (trained checkpoints carry their text embeddings: no CLIP)",
    )
    parser.add_argument("--quick", action="store_true", help="check sizes only, skip sha256 (multi-GB files)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    explicit = bool(args.config)
    configs = [get_config(name) for name in (args.config or list(MODEL_CONFIGS))]
    purpose = "inference" if args.inference else "training"
    needed: dict[str, tuple[weights.WeightFile, list[str]]] = {}
    for cfg in configs:
        for wf in weights.required_files(cfg, purpose):
            needed.setdefault(wf.name, (wf, []))[1].append(cfg.name)

    folder = Path(args.models_dir) if args.models_dir else models_dir()
    if not needed:
        names = ", ".join(cfg.name for cfg in configs)
        print(f"config {names} needs no weight files (random frozen weights, no CLIP)")
        return 0

    show_progress = on_terminal()
    results = {
        name: weights.check(folder / name, wf, verify_sha=not args.quick, progress=show_progress)
        for name, (wf, _) in needed.items()
    }
    failed_downloads: list[str] = []
    if args.download:
        for name, (wf, _) in needed.items():
            if results[name].status.usable:
                continue
            print(f"downloading {name} from {weights.source_url(wf, args.mirror) or '(no source)'}", file=sys.stderr)
            try:
                path = weights.download(wf, folder, mirror=args.mirror, progress=show_progress)
            except weights.WeightDownloadError as exc:
                print(f"taseg weights: error: {exc}", file=sys.stderr)
                failed_downloads.append(name)
                results[name] = weights.check(folder / name, wf, verify_sha=False)
                continue
            # download() verified size and sha256 before the rename; no need to hash again
            status = weights.Status.OK if wf.verified else weights.Status.UNVERIFIED
            results[name] = weights.CheckResult(status, path, size_bytes=path.stat().st_size)

    print(f"models folder: {folder}")
    rows = [("FILE", "SIZE", "SHA256", "STATUS", "CONFIGS", "SOURCE")]
    for name, (wf, users) in needed.items():
        rows.append((
            name,
            human_size(wf.size_bytes, unknown="unknown"),
            wf.sha256[:12] if wf.sha256 else "unverified",
            results[name].status.value + (" (size only)" if args.quick and results[name].status is weights.Status.OK else ""),
            ",".join(users),
            weights.source_url(wf, args.mirror) or "- (not in the registry: supply it yourself)",
        ))
    _print_table(rows)

    problems = [name for name, result in results.items() if not result.status.usable]
    for name in problems:
        result = results[name]
        if result.status is not weights.Status.MISSING:
            print(f"  {result.describe(needed[name][0])}")
    corrupt = [n for n in problems if results[n].status in (weights.Status.SIZE_MISMATCH, weights.Status.SHA_MISMATCH)]
    unregistered = [n for n in problems if weights.source_url(needed[n][0], args.mirror) is None]
    for name in unregistered:
        print(f"  {name}: not in the weight registry; copy it into {folder} yourself")
    fetchable = [n for n in problems if n not in unregistered]
    if fetchable and not args.download:
        extra = " --inference" if args.inference else ""
        extra += f" --models-dir {folder}" if args.models_dir else ""
        extra += f" --mirror {args.mirror}" if args.mirror else ""
        if explicit:
            users = sorted({user for name in fetchable for user in needed[name][1]})
            flags = " ".join(f"--config {user}" for user in users)
            print(f"{len(fetchable)} file(s) to fetch: taseg weights {flags} --download{extra}")
        else:
            print(f"{len(fetchable)} file(s) absent or bad; fetch a config's files with: "
                  f"taseg weights --config NAME --download{extra}")
    if failed_downloads:
        return 1
    if explicit:
        return 1 if problems else 0
    return 1 if corrupt else 0  # listing every config: absent files of sizes you don't use are fine


def _print_table(rows: list[tuple[str, ...]]) -> None:
    # Hand-aligned columns: the table is six short columns, not worth a tabulate dependency.
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1])
