"""The latent analysis report (``facegen analyze``): traversals, named dimensions, directions, measured edits,
disentanglement and maps of one generative bundle. An application of :mod:`facegen.latent`; no Ray."""
