"""The measures' settings (a study file's ``measure_config``), apart from the measures so the
study file is parsed without importing torch."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MeasureConfig:
    """Parameters of the measures that need a search, sampling or a data subset.

    bisection_depth: halvings of the (geometric) search for the PAC-Bayes sigma and the
        sharpness alpha (Jiang et al. 2020, App. C.6; the reference's ``_pacbayes_sigma``
        ``search_depth=15``, the default).
    mc_draws: Monte-Carlo weight perturbations per bisection step (the reference's
        ``montecarlo_samples=10``, the default). Cheaper settings are a study's choice
        (``measure_config``), recorded in the ledger's ``measure_config.*`` columns.
    subset: training examples used by the perturbation, gradient and Hessian measures.
    accuracy_drop: target drop of training accuracy that defines sigma / alpha (0.1).
    drop_tolerance: stop the bisection once the drop is this close to the target.
    magnitude_eps: epsilon of the magnitude-aware perturbations (Jiang et al.: 1e-3).
    ascent_steps: projected sign-gradient ascent steps of the worst-case sharpness.
    sharpness_alpha: box size of Keskar et al.'s fixed-alpha sharpness (their 5e-4).
    noise_batch_size: minibatch size whose gradient variance is the gradient noise.
    eval_batch_size: examples per forward pass when evaluating a whole dataset.
    seed: seeds every random draw (one ``torch.Generator`` per measure).
    linf_batches: minibatches of Study 3's L-inf gradient bound (Zhang, Maes et al., NeurIPS
        2025, Sec. 4.1, Fig. 7 and App. B.3 Algorithm 1: T = 1,000).
    hessian_batches: minibatches over which each sampled Hessian row of Study 3's (1,1)-norm
        and block probes is averaged before any norm (the paper's k, Sec. 4.1 "Block-
        diagonality of the Hessian": k = 5,000).
    hessian_coordinates: sampled Hessian rows of those probes. The paper does not state how
        many rows it samples (App. B.3 averages the L1 norms of "sampled rows"; Fig. 9 and
        App. C.3 show one row per layer type), so 16 is our choice.
    orthogonality_steps: steps of resumed training over which Study 3's update orthogonality
        is averaged (Sec. 4.2: "the next 500 steps").
    The minibatch size of those probes is ``noise_batch_size``; the paper does not state it.
    noise_std: ``reference`` (default) draws the PAC-Bayes perturbation with standard
        deviation ``sigma^2`` (magnitude-aware: ``sigma^2 w_i^2 + eps^2``), as the
        reference's ``_perturbed_model`` passes them to ``torch.normal`` as its std
        (``data/generation/measures.py`` lines 47 and 49); ``paper`` uses ``sigma`` (variance
        ``sigma^2 w_i^2 + eps^2``), Jiang et al.'s definition (App. C.6-C.7).
    fft_input: ``image`` (default) takes every conv layer's FFT spectral norm at the input
        image's size with stride 1 and no padding, as the reference (line 224: ``input_shape
        = D[1], D[2]`` for every layer, ``np.fft.fft2(kernel, input_shape)``); ``layer``
        takes the exact operator of each layer on its own input size (Sedghi et al. 2019).
    margin: ``reference`` (default) takes the absolute value of the ``m // 10``-th smallest
        margin, as the reference (lines 162 and 164: ``kthvalue(m // 10)``, ``.abs()``);
        ``paper`` takes the ``ceil(0.1 m)``-th and leaves the margin measures undefined when
        it is <= 0 (Jiang et al.'s margin is positive, App. C.2).
    """

    bisection_depth: int = 15
    mc_draws: int = 10
    subset: int = 512
    accuracy_drop: float = 0.1
    drop_tolerance: float = 0.01
    magnitude_eps: float = 1e-3
    ascent_steps: int = 5
    sharpness_alpha: float = 5e-4
    noise_batch_size: int = 32
    eval_batch_size: int = 1024
    seed: int = 0
    linf_batches: int = 1000
    hessian_batches: int = 5000
    hessian_coordinates: int = 16
    orthogonality_steps: int = 500
    noise_std: str = "reference"
    fft_input: str = "image"
    margin: str = "reference"

    def __post_init__(self) -> None:
        for key, choices in (
            ("noise_std", ("reference", "paper")),
            ("fft_input", ("image", "layer")),
            ("margin", ("reference", "paper")),
        ):
            if getattr(self, key) not in choices:
                raise ValueError(
                    f"MeasureConfig.{key} must be one of {', '.join(choices)}, "
                    f"got {getattr(self, key)!r}"
                )
        for key in (
            "bisection_depth",
            "mc_draws",
            "subset",
            "ascent_steps",
            "noise_batch_size",
            "eval_batch_size",
            "linf_batches",
            "hessian_batches",
            "hessian_coordinates",
            "orthogonality_steps",
        ):
            if getattr(self, key) < 1:
                raise ValueError(f"MeasureConfig.{key} must be >= 1, got {getattr(self, key)}")
        if not 0.0 < self.accuracy_drop < 1.0:
            raise ValueError(
                f"MeasureConfig.accuracy_drop must be in (0, 1), got {self.accuracy_drop}"
            )
        if self.magnitude_eps <= 0 or self.sharpness_alpha <= 0 or self.drop_tolerance < 0:
            raise ValueError(
                "MeasureConfig.magnitude_eps and sharpness_alpha must be > 0, drop_tolerance >= 0"
            )


DEFAULT_CONFIG = MeasureConfig()  # the references' settings, where a caller gives none
