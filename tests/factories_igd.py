"""Small IGDDetector for the shared contract tests (32x32 images, seconds to fit)."""


def small_detector(**overrides):
    from skanomaly import IGDDetector

    params = dict(
        teacher=None,
        image_size=32,
        beta=1.0,
        width=4,
        latent_dim=8,
        max_epochs=2,
        batch_size=8,
        device="cpu",
        random_state=0,
    )
    params.update(overrides)
    return IGDDetector(**params)
