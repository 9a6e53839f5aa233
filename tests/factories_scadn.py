"""Small SCADNDetector for the shared contract tests (32x32 images, seconds to fit)."""


def small_detector(**overrides):
    from skanomaly import SCADNDetector

    params = dict(
        width=4,
        image_size=32,
        max_epochs=2,
        batch_size=8,
        lr=1e-3,
        device="cpu",
        random_state=0,
    )
    params.update(overrides)
    # SCADN's generator works at 1/8 of the image size with dilation-2
    # residual blocks and its PatchGAN needs 24 px: 24 is its smallest working
    # size (scikit-learn's check suite asks for 16 to be quick).
    params["image_size"] = max(24, params["image_size"])
    return SCADNDetector(**params)
