"""Autoencoder recipes on Fashion-MNIST (issue E, items 1, 2 and 6): compression, denoising, inpainting, the VAE.

    reconstruction.py   autoencoder, denoising-ae, inpainting, autoencoder-latent-sweep: one configuration
                        (`ReconstructionConfig`: corruption none / noise / rectangles) trained as a
                        learnloop.tasks.reconstruction.Reconstruction, scored on the test split by MSE, PSNR
                        and SSIM (learnloop.metrics.image) beside baselines (mean image, PCA, blur, fills)
    vae.py              vae, vae-2d (Kingma & Welling, 2014): ELBO terms logged per epoch, KL warm-up, beta,
                        the importance-weighted log-likelihood (Burda et al., 2016), samples scored by
                        learnloop.evaluation.generative, the 2-D latent map; `run.model.encode/decode` make a
                        trained VAE a latent compressor for later recipes (through load_run)
    common.py           data and model sections, splits, the corrupting loader, per-image scoring, user images

Models: learnloop.models.autoencoder (Autoencoder, VAE; vector or spatial latents). The modules register
their recipes when `learnloop.recipes.base.recipes()` walks this package; the family is "autoencoder".
"""
