"""One module per model family (autoencoders, gans, voxel_gan, deepsdf, atlasnet, occnet, nerf,
graf), each with its networks and losses.

A module that ships pretrained weights defines ``train_checkpoint() -> dict`` (returns the
metrics it recorded): ``gen3d-course train NAME`` finds it by module name, runs it in the
current run mode (``full`` for the shipped files) and it saves with ``checkpoints.save_checkpoint``.
"""
