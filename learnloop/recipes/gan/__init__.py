"""GAN recipes on Fashion-MNIST: six variants of one configuration, plus three studies of a trained generator.

Every GAN is `GanParts` with a `GanConfig` whose architecture, loss, regularizer and normalisation are
choices (learnloop.models.gan, learnloop.losses.adversarial / .regularizers), trained as the two players
"generator" and "discriminator" of one `learnloop.tasks.adversarial.AdversarialTask` (stage "gan",
checkpoints/gan/):

    train.py          gan-mlp, dcgan, wgan-clip, wgan-gp, sngan, cgan (Goodfellow et al., 2014; Radford et
                      al., 2016; Arjovsky et al., 2017; Gulrajani et al., 2017; Miyato et al., 2018; Mirza &
                      Osindero, 2014) and the predictor that turns seeds into samples
    common.py         GanConfig, the training images, the task and its callbacks (EMA of G, sample grid,
                      weight clipping, per-epoch FID that picks `best`), the sampling generator of a
                      checkpoint, the evaluation of the `best` and `last` checkpoints

The studies consume a GAN run (`generator_run`, any of the six) or train one first as their stage "gan"
(study.py: what they share):

    truncation.py     truncation       truncation trick (Brock et al., 2019): precision vs recall as
                                       |z_i| <= t tightens
    bias_probe.py     gan-bias-probe   class and attribute frequencies of samples vs real data, through
                                       the evaluation classifier: under-/over-represented modes (mode
                                       collapse, bias)
    controllable.py   controllable     z <- z + eta * grad_z log p_c(G(z)) with an attribute classifier c (a
                                       class, or the image brightness; the class guide is trained as stage
                                       "guide"), judged by the separate evaluator: success rate and
                                       entanglement

The recipe modules register themselves when `learnloop.recipes.base.recipes()` walks this package (imported
below in the order they were registered as one module); the family is this package's name, "gan".
"""

from learnloop.recipes.gan.common import (
    GANS, STAGE, GanConfig, build_task, evaluator_available, sampling_generator,
)
from learnloop.recipes.gan.train import GanParts
from learnloop.recipes.gan import truncation, bias_probe, controllable  # noqa: F401  (registers the studies)

__all__ = ["GANS", "STAGE", "GanConfig", "GanParts", "build_task", "evaluator_available", "sampling_generator"]
