"""How smooth are the generator's foreign patches against their surroundings?

``make_defects``' *patch* pastes the same texture, rotated, rescaled by
0.8-1.25 and resampled bilinearly.  For ``--n`` patches per texture (256 px
crops, as the texture benchmark) this prints the median ratio of the mean
Sobel gradient magnitude inside the patch (eroded by 3 px) to that of a ring
3-20 px around it, and the share of patches smoother than their ring.  A
ratio below 1 means the patch is smoother than the texture around it, which
lowers a reconstruction error there (docs/methods/dfr.rst)::

    python benchmarks/bench_patch_smoothness.py
"""

import argparse

import numpy as np
from scipy import ndimage

import _common
from skanomaly.datasets import make_texture_defects


def smoothness(texture, n, seed, size=256):
    data = make_texture_defects(_common.texture_source(texture, size), n_train=2,
                                n_test=2 * n, image_size=size, kinds="patch",
                                random_state=seed)
    X = np.asarray(data.X_test, dtype=np.float64)
    X = X.mean(axis=-1) if X.ndim == 4 else X
    ratios = []
    for x, mask in zip(X, np.asarray(data.masks_test, dtype=bool)):
        core = ndimage.binary_erosion(mask, iterations=3)
        ring = ndimage.binary_dilation(mask, iterations=20) & ~ndimage.binary_dilation(
            mask, iterations=3)
        if core.sum() < 20:
            continue
        energy = np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1))
        ratios.append(energy[core].mean() / energy[ring].mean())
    return np.asarray(ratios)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="patches per texture")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print("| texture | patches | median inside / around | share smoother |")
    print("|---|---:|---:|---:|")
    for texture in ("brick", "grass", "gravel"):
        r = smoothness(texture, args.n, args.seed)
        print(f"| {texture} | {len(r)} | {np.median(r):.3f} | {(r < 1).mean():.2f} |")


if __name__ == "__main__":
    main()
