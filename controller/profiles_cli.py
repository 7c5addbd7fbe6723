"""``edgefleet profiles list|show|validate`` and ``edgefleet profile-host``.

Why a CLI: profiles are user-editable data; someone adding a board needs to
check their file before a build fails on it, and to see what the shipped ones
say. Imports only ``common.profiles`` (pydantic) at module level so
``edgefleet --help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from common.profiles import ProfileError, list_profiles, load_profile, load_profile_file


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``profiles`` (list/show/validate) and ``profile-host`` to the ``edgefleet`` parser."""
    p = sub.add_parser("profiles", help="list, show and validate device profiles")
    psub = p.add_subparsers(dest="profiles_command", metavar="ACTION", required=True)
    ls = psub.add_parser("list", help="every profile in the profiles directory")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_cmd_list)
    show = psub.add_parser("show", help="one profile, validated, with defaults filled in")
    show.add_argument("profile", help="profile id or path to a .toml file")
    show.set_defaults(func=_cmd_show)
    val = psub.add_parser("validate", help="validate profile files; exit 1 naming the bad field")
    val.add_argument("files", nargs="+", type=Path)
    val.set_defaults(func=_cmd_validate)

    host = sub.add_parser("profile-host", help="profile this machine and recommend the closest profile")
    host.add_argument("--id", default="this-host", help="id for the generated profile")
    host.add_argument("--write", type=Path, help="also write the profile as a TOML file")
    host.add_argument("--json", action="store_true", help="machine-readable output")
    host.set_defaults(func=_cmd_profile_host)


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        profiles = list_profiles()
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([p.model_dump(mode="json") for p in profiles], indent=2))
        return 0
    print(f"{'id':<18} {'arch':<8} {'cores':>5} {'ram_mb':>7}  {'formats':<16} recipe")
    for p in profiles:
        recipe = f"{p.recipe.technique} -> {p.recipe.format}"
        print(f"{p.id:<18} {p.arch:<8} {p.cores:>5} {p.ram_mb:>7}  {','.join(p.formats):<16} {recipe}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(profile.model_dump(mode="json"), indent=2))
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            profile = load_profile_file(path)
        except ProfileError as exc:
            failed += 1
            print(f"INVALID {exc}", file=sys.stderr)
        else:
            print(
                f"ok      {path}: {profile.id} ({profile.arch}, recipe {profile.recipe.technique} -> "
                f"{profile.recipe.format})"
            )
    return 1 if failed else 0


def _cmd_profile_host(args: argparse.Namespace) -> int:
    from controller.hardware import profile_host, profile_to_toml

    report = profile_host(args.id)
    text = profile_to_toml(report.profile)
    if args.write:
        args.write.write_text(text)
    if args.json:
        print(
            json.dumps(
                {
                    "profile": report.profile.model_dump(mode="json"),
                    "closest": report.closest,
                    "ranking": report.ranking,
                },
                indent=2,
            )
        )
        return 0
    print(text)
    print(f"# closest shipped profile: {report.closest or 'none (no profile for this arch)'}")
    for pid, score in [r for r in report.ranking if r[1] > 0][:3]:
        print(f"#   {pid:<18} similarity {score:.2f}")
    return 0
