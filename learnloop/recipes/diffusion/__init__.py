"""Diffusion recipes on Fashion-MNIST (family "diffusion").

    ddpm.py        ddpm    denoising diffusion (Ho, Jain & Abbeel, 2020) with an eps- or v-prediction U-Net,
                           linear or cosine betas, DDPM and DDIM sampling, leading / trailing / linspace
                           timestep spacing; the predictor turns seeds into sample PNGs
    common.py      the config sections (unet, sampler, curve, train, data, eval), the images in [-1, 1] with a
                   fixed validation set, the DiffusionTask with its EMA and sample-grid callbacks, the
                   sampling model (EMA weights) of a checkpoint, seeded generation
    evaluation.py  the training summary, the generative metrics of the EMA weights' samples, FID / precision /
                   recall vs sampling steps for DDPM and DDIM
    text_to_image.py  text-to-image  latent diffusion in miniature (Rombach et al., 2022): a vae run's 4x7x7
                   latents, a U-Net with cross-attention on a clip run's token states, classifier-free
                   guidance (Ho & Salimans, 2022); `learnloop generate` and the predictor draw grids
    latent.py      captioned latent batches, the frozen VAE and CLIP as the U-Net task's inputs, the one
                   prompts -> images sampling path
    guidance.py    class agreement and FID / precision / recall vs the guidance scale

The techniques live below: learnloop.models.unet (the U-Net, with an optional cross-attention path for
text-to-image), learnloop.models.diffusion (schedules, targets, samplers), learnloop.losses.diffusion,
learnloop.tasks.diffusion, learnloop.models.latent_diffusion. Modules register themselves when `learnloop.recipes.base.recipes()` walks this
package.
"""
