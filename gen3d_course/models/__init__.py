"""The methods, one module per family (autoencoders, gans, wgan, voxel_gan, deepsdf, atlasnet,
occnet, nerf, graf, vqvae, transformer, diffusion, score_distillation): networks, losses and ``fit``, written like
the paper's method section.

What the course does with a family (baselines, probes, evaluation, the shipped checkpoint) lives
in ``gen3d_course.experiments`` under the same name.
"""
