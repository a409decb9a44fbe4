"""Argument types and options that several commands share.

Number types that refuse nonsense at parse time, ``NAME=VALUE`` lists
(thresholds, probability maps, artifacts), the copick project options and
RELION's tilt-series pixel size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InvalidSettingsError, TomosegError


def number(kind: type, low: float = 0.0, inclusive: bool = False, high: float | None = None):
    """An argparse type: a ``kind`` number above ``low`` (or from it), at most ``high``."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__} number, not '{text}'")
        if value != value or (value < low if inclusive else value <= low) or (
                high is not None and value > high):
            bound = f"at least {low:g}" if inclusive else f"above {low:g}"
            raise argparse.ArgumentTypeError(
                f"must be {bound}{f' and at most {high:g}' if high is not None else ''}, "
                f"not {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


POSITIVE = number(float)
POSITIVE_INT = number(int)
COUNT = number(int, 0, inclusive=True)
VOXEL_SIZE = number(float, 0.1, inclusive=True, high=1000.0)
PROBABILITY = number(float, 0, inclusive=True, high=0.999)


def feature_name(text: str) -> str:
    """An argparse type: a feature name is words, not empty or blank."""
    name = text.strip()
    if not name:
        raise argparse.ArgumentTypeError("a feature needs a name")
    return name


def key_values(pairs: list[str] | None, what: str, empty_values: bool = False
               ) -> dict[str, str]:
    """``NAME=VALUE`` options as a dict; each name once, never blank (nor the value, unless
    ``empty_values``: a bare --artifact)."""
    result = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise TomosegError(f"{what} must be given as NAME=VALUE, not '{pair}'.")
        key, value = pair.split("=", 1)
        if not key.strip() or not (value.strip() or empty_values):
            raise TomosegError(f"{what} '{pair}' needs both a NAME and a VALUE.")
        if key.strip() in result:
            raise TomosegError(f"{what} names '{key.strip()}' twice; give each once.")
        result[key.strip()] = value.strip()
    return result


def thresholds(pairs: list[str] | None, features: list[str] | None = None) -> dict[str, float]:
    """--threshold FEATURE=VALUE pairs, each a number in [0, 1), each of ``features`` if given.

    A misspelled feature's threshold would otherwise be ignored without a word.
    """
    result = {}
    for key, value in key_values(pairs, "--threshold").items():
        try:
            result[key] = float(value)
        except ValueError:
            raise InvalidSettingsError(f"--threshold {key}={value}: the threshold must be a "
                                       "number in [0, 1).") from None
        if not 0 <= result[key] < 1:
            raise InvalidSettingsError(f"--threshold {key}={value}: the threshold must lie in [0, 1).")
        if features is not None and key not in features:
            raise InvalidSettingsError(f"--threshold {key}={value}: '{key}' is not a feature of "
                                       f"this run (known: {', '.join(features)}).")
    return result


def min_sizes(pairs: list[str] | None, features: list[str]) -> dict[str, float]:
    """--min-size FEATURE=NM3 pairs: the smallest piece kept of each, in nm^3 (0 keeps all)."""
    from ..small_pieces import parse_min_sizes

    return parse_min_sizes(pairs or [], features)


def artifacts(given: list[str] | None) -> dict[str, tuple[str, ...]]:
    """--artifact ARTIFACT=FEATURE[,FEATURE] or a bare ARTIFACT: {artifact: features}.

    A bare artifact (no features) removes voxels from every other feature;
    ``merge.artifact_rules`` resolves that once the features are known.
    """
    pairs = [item if "=" in item else f"{item}=" for item in given or []]
    return {key: tuple(f.strip() for f in value.split(",") if f.strip())
            for key, value in key_values(pairs, "--artifact", empty_values=True).items()}


def voxel_checked(info, path, args: argparse.Namespace):
    """``info`` with the voxel size of --voxel-size, or of a header that has a usable one."""
    from ..io.mrc import require_voxel_size

    return require_voxel_size(info, path, getattr(args, "voxel_size", None))


def copick_options(p: argparse.ArgumentParser, several_runs: bool) -> None:
    group = p.add_argument_group("copick project (pip install 'napari-tomoseg[copick]')")
    group.add_argument("--copick", type=Path, metavar="CONFIG", help="copick project config (JSON)")
    group.add_argument("--run", action="append" if several_runs else "store",
                       help="copick run" + (" (repeat; default: every run)" if several_runs else ""))
    group.add_argument("--voxel-spacing", type=float, default=10.0, help="A (default 10)")
    group.add_argument("--tomo-type", default="wbp", help="tomogram type (default wbp)")
    group.add_argument("--user-id", default="tomoseg", help="copick user id of our results")
    group.add_argument("--session-id", default="0", help="copick session id (default 0: a tool)")
    group.add_argument("--copick-object", action="append", metavar="FEATURE=OBJECT",
                       help="file FEATURE's results as the project's OBJECT (repeat; default: "
                            "the feature's own name)")


def copick_source(args: argparse.Namespace, run: str | None = None):
    """The copick project location named by --copick/--run/... (None without --copick)."""
    if not getattr(args, "copick", None):
        if getattr(args, "copick_object", None):
            raise TomosegError("--copick-object names copick objects: give --copick CONFIG too.")
        return None
    from ..io.copick_project import CopickSource

    if run is None and isinstance(args.run, str):
        run = args.run
    objects = tuple(key_values(getattr(args, "copick_object", None), "--copick-object").items())
    return CopickSource(config=str(args.copick), run=run, voxel_spacing=args.voxel_spacing,
                        tomo_type=args.tomo_type, user_id=args.user_id, session_id=args.session_id,
                        objects=objects)


def tilt_series_option(parser: argparse.ArgumentParser) -> None:
    """RELION's rlnTomoTiltSeriesPixelSize: the tomogram header does not carry it."""
    parser.add_argument("--tilt-series-pixel-size", "--unbinned-voxel-size",
                        dest="tilt_series_pixel_size", type=VOXEL_SIZE,
                        help="pixel size (A) of the unbinned tilt series the tomogram was "
                             "reconstructed from (RELION's rlnTomoTiltSeriesPixelSize; "
                             "not written when not given)")


def voxel_size_option(parser: argparse.ArgumentParser, what: str = "a tomogram whose") -> None:
    parser.add_argument("--voxel-size", type=VOXEL_SIZE,
                        help=f"A per voxel, for {what} header lacks it")


def precision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", choices=("auto", "float32", "bfloat16"), default="auto",
                        help="auto: bfloat16 arithmetic on CPUs that have it natively (about "
                             "1.3x faster end to end, Dice within 0.002); float32: identical "
                             "maps on every machine")


def dtype_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dtype", choices=("float16", "float32", "uint8"), default="float16",
                        help="map values: float16 (default; MRC mode 12, which IMOD before 4.10 "
                             "cannot read), float32, or uint8 0-255 (MRC has no 8-bit unsigned "
                             "mode: stored as uint16, twice the size)")
