"""How smooth are the generator's foreign patches against their surroundings?

``make_defects``' *patch* pastes the same texture, rotated, rescaled by
0.8-1.25 and resampled bilinearly.  For ``--n`` patches per texture (256 px
crops, as the texture benchmark) this prints the median ratio of the mean
Sobel gradient magnitude inside the patch (eroded by 3 px) to that of a ring
3-20 px around it, and the share of patches smoother than their ring.  A
ratio below 1 means the patch is smoother than the texture around it, which
lowers a reconstruction error there (docs/methods/dfr.rst).  ``--figure``
also saves, per texture, ``--per-texture`` patched crops as the detectors see
them (top) and with the patch's outline (bottom), so one can judge by eye
whether the patch is a visible defect at all (needs matplotlib)::

    python benchmarks/bench_patch_smoothness.py
    python benchmarks/bench_patch_smoothness.py --figure docs/figures/texture_patches.jpg
"""

import argparse
import os

import numpy as np
from scipy import ndimage

import _common
from skanomaly.datasets import make_texture_defects


def patched_crops(texture, n, seed, size=256):
    """``n`` test crops of ``texture`` with one foreign patch each, and masks."""
    data = make_texture_defects(_common.texture_source(texture, size), n_train=2,
                                n_test=2 * n, image_size=size, kinds="patch",
                                random_state=seed)
    defective = np.asarray(data.y_test) == 1
    return (np.asarray(data.X_test)[defective],
            np.asarray(data.masks_test, dtype=bool)[defective])


def smoothness(texture, n, seed, size=256):
    X, masks = patched_crops(texture, n, seed, size)
    X = np.asarray(X, dtype=np.float64)
    X = X.mean(axis=-1) if X.ndim == 4 else X
    ratios = []
    for x, mask in zip(X, masks):
        core = ndimage.binary_erosion(mask, iterations=3)
        ring = ndimage.binary_dilation(mask, iterations=20) & ~ndimage.binary_dilation(
            mask, iterations=3)
        if core.sum() < 20:
            continue
        energy = np.hypot(ndimage.sobel(x, 0), ndimage.sobel(x, 1))
        ratios.append(energy[core].mean() / energy[ring].mean())
    return np.asarray(ratios)


def save_figure(path, textures, per_texture, seed, size=256):
    """Patched crops (top row of a texture) and their outlines (bottom row)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from skanomaly._files import atomic_path

    fig, axes = plt.subplots(2 * len(textures), per_texture,
                             figsize=(2.2 * per_texture, 4.5 * len(textures)), squeeze=False)
    for t, texture in enumerate(textures):
        X, masks = patched_crops(texture, per_texture, seed, size)
        for j in range(per_texture):
            top, bottom = axes[2 * t, j], axes[2 * t + 1, j]
            for ax in (top, bottom):
                ax.imshow(X[j], cmap="gray", vmin=0, vmax=255)
                ax.set_xticks([])
                ax.set_yticks([])
            bottom.contour(masks[j], [0.5], colors="red", linewidths=1.0)
        axes[2 * t, 0].set_ylabel(f"{texture}: patched crop", fontsize=9)
        axes[2 * t + 1, 0].set_ylabel("patch outlined", fontsize=9)
    fig.tight_layout()
    fmt = os.path.splitext(path)[1].lstrip(".").lower() or "png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=60, format=fmt,
                    pil_kwargs={"quality": 85} if fmt in ("jpg", "jpeg") else None)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="patches per texture")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--figure", help="also save example crops here (PNG or JPEG, from the extension)")
    parser.add_argument("--per-texture", type=int, default=4,
                        help="crops per texture in the figure (default: 4)")
    args = parser.parse_args(argv)
    if args.figure:
        save_figure(args.figure, ("brick", "grass", "gravel"), args.per_texture, args.seed)
    print("| texture | patches | median inside / around | share smoother |")
    print("|---|---:|---:|---:|")
    for texture in ("brick", "grass", "gravel"):
        r = smoothness(texture, args.n, args.seed)
        print(f"| {texture} | {len(r)} | {np.median(r):.3f} | {(r < 1).mean():.2f} |")


if __name__ == "__main__":
    main()
