"""Local: export the project's Omniglot protocol (pixel values as the recipe's collator makes them, labels, and the
600 fixed test-episode plans of the recipe: seed 1, 5-way, K in {1, 5}, 15 queries, rotations x4) for the device,
which has no `datasets`. Checks that rebuilding episodes from the export equals the collator's tensors.

    python benchmarks/omniglot_gpu/export_omniglot.py runs/device/omniglot_export.npz
"""

import sys

import numpy as np
import torch

from hf_transfer_meta.meta import EpisodeCollator, EpisodeDataset, omniglot_meta_splits
from hf_transfer_meta.meta.data.collator import to_pixel_values

ROT = [0, 90, 180, 270]
split = omniglot_meta_splits()
out = {}
for name, ds in (("train", split.train), ("test", split.test)):
    out[f"{name}_x"] = torch.stack([to_pixel_values(r["image"]) for r in ds]).numpy()
    out[f"{name}_y"] = np.asarray(ds["label"])
    out[f"{name}_alphabet"] = np.asarray(ds["alphabet"])
for k in (1, 5):
    eps = EpisodeDataset(split.test, 5, k, 15, num_episodes=600, seed=1, rotations=ROT, fixed=True)
    plans = [eps.plan(i) for i in range(600)]
    out[f"eval{k}_support"] = np.array([p.support_rows for p in plans])
    out[f"eval{k}_query"] = np.array([p.query_rows for p in plans])
    out[f"eval{k}_rot"] = np.array([p.rotations for p in plans]) // 90
    collate, x = EpisodeCollator(), torch.from_numpy(out["test_x"])
    for i in (0, 17, 599):  # rebuilt from the export == the collator's tensors
        ref = collate.collate_episode(eps[i])
        for part in ("support", "query"):
            rows, turns = out[f"eval{k}_{part}"][i], out[f"eval{k}_rot"][i]
            rebuilt = torch.cat([torch.rot90(x[list(r)], int(q), dims=(-2, -1)) for r, q in zip(rows, turns)])
            assert torch.equal(rebuilt, ref[part]["pixel_values"]), f"{part} differs"
np.savez_compressed(sys.argv[1] if len(sys.argv) > 1 else "omniglot_export.npz", **out)
print({k: v.shape for k, v in out.items()})
