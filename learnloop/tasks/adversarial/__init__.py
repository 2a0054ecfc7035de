"""Adversarial training as one `Task` (manual optimisation): named players, each minimising a weighted sum
of terms; the two-player game of Goodfellow et al. (2014) and its image-to-image descendants.

    game.py   the declarations (Term, Regularizer, Pass, Player), their checks, and each player's loss
              L_p = sum_j w_j * term_j + sum_r s_t(r) * lambda_r * R_r (lazy regularization: Karras et
              al., 2020) on one step's tensors
    task.py   AdversarialTask: which players update on a batch (n_critic: Arjovsky et al., 2017), frozen
              critics under the generators' backward, the per-epoch monitor, runaway check, CPU budget
    noise.py  noise-driven generators: z ~ N(0, I) with the truncation trick (Brock et al., 2019),
              `generate`, and `noise_gan`, the GAN of Goodfellow et al. (2014) as an AdversarialTask

A GAN, Pix2Pix, CycleGAN, SRGAN or StyleGAN2 are configurations of this one task.
"""

from learnloop.tasks.adversarial.game import (
    TERM_KINDS, Pass, Player, Regularizer, Term, Values, adversarial, image_batch,
)
from learnloop.tasks.adversarial.noise import generate, noise_gan, sample_noise
from learnloop.tasks.adversarial.task import AdversarialTask

__all__ = ["TERM_KINDS", "AdversarialTask", "Pass", "Player", "Regularizer", "Term", "Values", "adversarial",
           "generate", "image_batch", "noise_gan", "sample_noise"]
