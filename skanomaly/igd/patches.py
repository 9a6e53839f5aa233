"""The local branch's patches: where they start, cutting images, folding maps back."""

from __future__ import annotations

import torch

__all__ = ["patch_starts", "extract_patches", "fold_patch_maps"]


def patch_starts(size, patch, stride):
    """Top-left offsets of patches covering ``[0, size)``; the last one touches the border."""
    if size < patch:
        raise ValueError(f"The image side {size} is smaller than the patch size {patch}.")
    starts = list(range(0, size - patch + 1, stride))
    if starts[-1] != size - patch:
        starts.append(size - patch)
    return starts


def extract_patches(x, patch=32, stride=16):
    """Cut (b, C, H, W) images into (b * P, C, patch, patch) patches, image-major, row-major."""
    b, c, h, w = x.shape
    rows, cols = patch_starts(h, patch, stride), patch_starts(w, patch, stride)
    windows = x.unfold(2, patch, 1).unfold(3, patch, 1)  # (b, C, H-p+1, W-p+1, p, p), a view
    idx_r = torch.as_tensor(rows, device=x.device)
    idx_c = torch.as_tensor(cols, device=x.device)
    windows = windows.index_select(2, idx_r).index_select(3, idx_c)
    return windows.permute(0, 2, 3, 1, 4, 5).reshape(-1, c, patch, patch)


def fold_patch_maps(maps, height, width, stride=16):
    """Average per-patch maps (b * P, p, p) back into (b, H, W) image maps.

    Overlapping patches are averaged (not summed), so the map keeps the
    per-patch scale.
    """
    patch = maps.shape[-1]
    rows, cols = patch_starts(height, patch, stride), patch_starts(width, patch, stride)
    maps = maps.view(-1, len(rows), len(cols), patch, patch)
    total = maps.new_zeros(maps.shape[0], height, width)
    count = maps.new_zeros(1, height, width)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            total[:, r : r + patch, c : c + patch] += maps[:, i, j]
            count[:, r : r + patch, c : c + patch] += 1
    return total / count
