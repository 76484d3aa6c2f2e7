"""The synthetic dataset's ground truth (``facegen synth``): its factors table and the names of its factors.

``factors.parquet``, written beside the rendered images, holds per image its ``key``, ``split`` and
``identity``, the 40 CelebA attributes as int8 0/1 (those not in :data:`RENDERED_ATTRIBUTES`: 0), the
:data:`CONTINUOUS_FACTORS` as float32, the :data:`INDEX_FACTORS` as int8 indices and ``gender`` (a
``FAIRFACE_GENDERS`` index). Latent analysis reads it to score disentanglement against the true factors.
"""

from __future__ import annotations

FACTORS_NAME = "factors.parquet"
RENDERED_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Bald", "Bangs", "Black_Hair", "Blond_Hair", "Brown_Hair", "Eyeglasses", "Goatee",
    "Gray_Hair", "Male", "Mouth_Slightly_Open", "Mustache", "Narrow_Eyes", "No_Beard", "Pale_Skin",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Wearing_Hat", "Wearing_Lipstick", "Young",
)
CONTINUOUS_FACTORS: tuple[str, ...] = ("yaw", "face_scale", "lighting", "lighting_angle", "background_hue",
                                       "skin_tone", "face_shape")
INDEX_FACTORS: tuple[str, ...] = ("race", "age", "hair_color", "beard")  # see synth.Face
# Rendered attributes drawn on their own (hair colours, beards and Young are functions of the index factors).
FACTOR_ATTRIBUTES: tuple[str, ...] = (
    "Male", "Bald", "Pale_Skin", "Smiling", "Mouth_Slightly_Open", "Eyeglasses", "Wearing_Hat", "Bangs",
    "Narrow_Eyes", "Rosy_Cheeks", "Wearing_Lipstick", "Mustache", "Sideburns", "5_o_Clock_Shadow",
)
