"""Diffusion recipes on Fashion-MNIST (family "diffusion").

    ddpm.py        ddpm    denoising diffusion (Ho, Jain & Abbeel, 2020) with an eps- or v-prediction U-Net,
                           linear or cosine betas, DDPM and DDIM sampling, leading / trailing / linspace
                           timestep spacing; the predictor turns seeds into sample PNGs
    common.py      the config sections (unet, sampler, curve, train, data, eval), the images in [-1, 1] with a
                   fixed validation set, the DiffusionTask with its EMA and sample-grid callbacks, the
                   sampling model (EMA weights) of a checkpoint, seeded generation
    evaluation.py  the training summary, the generative metrics of the EMA weights' samples, FID / precision /
                   recall vs sampling steps for DDPM and DDIM

The techniques live below: learnloop.models.unet (the U-Net, with an optional cross-attention path for
text-to-image), learnloop.models.diffusion (schedules, targets, samplers), learnloop.losses.diffusion,
learnloop.tasks.diffusion. Modules register themselves when `learnloop.recipes.base.recipes()` walks this
package.
"""
