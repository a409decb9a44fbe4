"""What ``tomoseg train`` trains on: the tomogram, its boxes, the model to continue.

Every input is checked before training starts: a session made on another
tomogram, or a network other than the one being continued, is refused.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from ..errors import InvalidSettingsError
from .arguments import voxel_checked


def training_inputs(args: argparse.Namespace):
    """(volume, voxel size, boxes, model to continue, settings, preprocessing)."""
    from ..annotations import check_boxes, load_boxes
    from ..box_grid import check_box_grid
    from ..io.mrc import open_volume
    from ..nn.model_file import load_model
    from ..nn.models import stem_parameters
    from ..nn.training import TrainingSettings
    from ..preprocess import PreprocessSettings, default_preprocessing
    from ..session_store import is_session

    volume, info = open_volume(args.tomogram)
    info = voxel_checked(info, args.tomogram, args)
    # a session folder keeps its boxes in session.json; a box folder in boxes.json
    if is_session(args.boxes):
        boxes = _session_boxes(args.boxes, volume, args.tomogram)
    else:
        boxes = load_boxes(args.boxes)
        check_box_grid(boxes, volume.shape, args.boxes)
    check_boxes(boxes, args.feature)
    start_from = load_model(args.resume) if args.resume else None
    if start_from is not None and (args.rotations is not None or args.stem3d != "auto"
                                   or args.orientations is not None):
        raise InvalidSettingsError("--rotations, --orientations and --stem3d are fixed when a "
                                   "model is first trained; a resumed model keeps its own.")
    args.arch = _architecture(args, start_from)
    parameters = stem_parameters(args.arch, args.stem3d)
    if args.rotations is not None:
        parameters["rotations"] = args.rotations
    if args.orientations is not None:
        parameters["symmetry"] = args.orientations
    settings = TrainingSettings(architecture=args.arch, seed=args.seed, device=args.device,
                                **({"steps": args.steps} if args.steps else {}),
                                batch_size=args.batch_size, learning_rate=args.learning_rate,
                                hold_out=not args.no_early_stop, average=args.average,
                                parameters=parameters, members=args.members)
    box_size = next(b.size for b in boxes if b.feature == args.feature)
    preprocess = default_preprocessing(info.isotropic_voxel_size, box_size, args.invert, args.arch,
                                       feature=args.feature)
    if start_from is not None:  # its own, unless asked otherwise (refused by the job then)
        own = start_from.preprocess
        preprocess = None if args.binning is None and not args.invert else replace(
            own, binning=args.binning or own.binning, invert=args.invert or own.invert)
    elif args.binning is not None:
        preprocess = PreprocessSettings(binning=args.binning, invert=args.invert,
                                        mode=preprocess.mode)
    return volume, info.isotropic_voxel_size, boxes, start_from, settings, preprocess


def _session_boxes(folder, volume, tomogram) -> list:
    """The boxes of an annotation session, refused if it was made on another tomogram."""
    from ..session import Session, data_checksum, fingerprint

    session = Session.load(folder)
    if session.shape and tuple(session.shape) != tuple(volume.shape):  # also without a checksum
        raise InvalidSettingsError(
            f"the session in {folder} was made on a {' x '.join(map(str, session.shape))} "
            f"tomogram (z y x), not {Path(tomogram).name}'s "
            f"{' x '.join(map(str, volume.shape))}: give that tomogram, or box this one.")
    same_file = session.tomogram_fingerprint == fingerprint(tomogram)  # as sessions reopen
    if not same_file and session.data_checksum and session.data_checksum != data_checksum(volume):
        raise InvalidSettingsError(
            f"the session in {folder} was made on another tomogram ({session.tomogram}: its "
            f"voxels differ from {Path(tomogram).name}'s); give that tomogram, or box this one.")
    return session.boxes


def _architecture(args: argparse.Namespace, start_from) -> str:
    """--arch, or the resumed model's (a different --arch is refused, not ignored)."""
    if start_from is None:
        return args.arch or "unet"
    if args.arch and args.arch != start_from.architecture:
        raise InvalidSettingsError(f"{args.resume} is a {start_from.architecture} network; "
                                   f"--arch {args.arch} cannot continue it.")
    if start_from.feature != args.feature:
        print(f"tomoseg: note: continuing the '{start_from.feature}' model as '{args.feature}'",
              file=sys.stderr)
    return start_from.architecture
