"""Latent-space math for every ``LatentModel``, written once for all families. Pure PyTorch/numpy, no Ray.

grids         reconstruction, sample and traversal pictures
sampler       PCA + kernel-density sampler (new faces from an AE)
directions    attribute directions: mean difference, linear boundary, conditional (keep-projected)
edit          edit(model, images, {attribute: strength}, keep=[...]) with scores before and after
naming        automatically named latent dimensions (traverse, score with a classifier, rank)
disentanglement  MIG, DCI and SAP against ground-truth factors
maps          2-D PCA / t-SNE maps of latent space
store         directions kept in model bundles
scoring       batched calls and the attribute-scorer protocol

The report built on these lives in :mod:`facegen.analysis`, the augmentation job in :mod:`facegen.augment`.
"""
