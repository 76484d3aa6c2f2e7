"""The augmentation job (``facegen augment``): attribute-edited variants of a folder of images, written by a
Ray Data actor pool (``job.py``; the only module here that touches Ray) with a manifest and an optional
CelebA-layout copy that ``facegen prepare`` reads."""
