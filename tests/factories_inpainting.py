"""Small InpaintingAE for the shared contract tests (32x32 images, seconds to fit)."""


def small_detector(**overrides):
    from skanomaly import InpaintingAE

    params = dict(
        width=4,
        image_size=32,
        smoothing_sigma=1.0,
        min_defect_area=4,
        max_epochs=2,
        batch_size=8,
        device="cpu",
        random_state=0,
    )
    params.update(overrides)
    return InpaintingAE(**params)
