"""The defaults of commit 6b3c405 on today's realistic cells, for a before/after in docs/engine.md.

Run from a worktree of 6b3c405 at /tmp/wt0 (git worktree add /tmp/wt0 6b3c405) after
bench_realistic.py has cached the cells; /tmp/cellpaths.txt lists the two cached cell files
(cell 0 then cell 1). U-Net 400 fixed steps, no binning, threshold 0.5, one pick per
connected component, as a user got them then.
"""
import sys, time
sys.path.insert(0, '/tmp/wt0/src')
sys.path.insert(1, '/work/main/benchmarks')
import numpy as np
import napari_tomoseg
assert napari_tomoseg.__file__.startswith('/tmp/wt0'), napari_tomoseg.__file__
import realistic as rs
from napari_tomoseg.nn.training import TrainingSettings, train
from napari_tomoseg.nn.inference import segment
from napari_tomoseg.picking import PickSettings, pick_particles
paths = open('/tmp/cellpaths.txt').read().split()
def load(path):
    d = np.load(path)
    return {'tomogram': d['tomogram'], 'particles': d['particles'],
            'labels': {k[6:]: d[k] for k in d.files if k.startswith('label_')}}
cells = [load(p) for p in paths]
for n_pos in (5, 10):
    boxes = rs.user_boxes(cells[0], 'ribosome', n_pos, 50)
    t = time.perf_counter()
    model = train(cells[0]['tomogram'], boxes, 10.0, TrainingSettings())
    secs = time.perf_counter() - t
    out = []
    for i, c in enumerate(cells):
        p = segment(c['tomogram'], model, 10.0)
        where = rs.held_out(boxes, p.shape) if i == 0 else None
        d = rs.dice_scores(p, c['labels']['ribosome'], where)
        picks = pick_particles(p, 10.0, PickSettings(diameter=250.0))
        m = rs.pick_scores(picks[['z', 'y', 'x']].to_numpy(), c)
        out.append(f"Dice {d['dice_05']:.2f} (best {d['best']:.2f}@{d['best_threshold']:.2f}) pick F1 {m['f1']:.2f} ({m['precision']:.2f}/{m['recall']:.2f})")
    print(f"session-start defaults, ribosome {n_pos}/50: same {out[0]} | other {out[1]} | train {secs:.0f} s", flush=True)
