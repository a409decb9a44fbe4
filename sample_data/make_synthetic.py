"""Rebuild sample_data/synthetic/: a small synthetic cell with its ground truth.

    python sample_data/make_synthetic.py

Same as ``tomoseg synth --shape 64 256 256 --seed 2026 --compact``; the
tomogram is int8, the labels gzip-compressed MRC, the ribosomes a STAR file.
"""

from pathlib import Path

from napari_tomoseg.synthetic import CellSpec, ImagingSpec, simulate, write_synthetic

FOLDER = Path(__file__).resolve().parent / "synthetic"

if __name__ == "__main__":
    spec = CellSpec(shape=(64, 256, 256), voxel_size=10.0, n_vesicles=3, n_microtubules=2,
                    n_actin=4)
    result = simulate(spec, ImagingSpec(), seed=2026)
    files = write_synthetic(result, FOLDER, name="synthetic_cell", overwrite=True, compact=True)
    for key, path in files.items():
        print(f"{key:12s} {path.relative_to(FOLDER.parent)}  {path.stat().st_size / 1e6:.2f} MB")
