"""Label vocabularies shared by the readers, the synthetic generator, the models and the service.

The orders below are the datasets' own: CelebA's ``list_attr_celeba.txt`` header and FairFace's label CSV
category strings. Changing an order changes every shard and bundle, so don't.
"""

CELEBA_ATTRIBUTES: tuple[str, ...] = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)
assert len(CELEBA_ATTRIBUTES) == 40

# CelebA's list_eval_partition.txt codes.
CELEBA_PARTITIONS: dict[int, str] = {0: "train", 1: "val", 2: "test"}

FAIRFACE_RACES: tuple[str, ...] = (
    "White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian", "Indian", "Middle Eastern",
)
FAIRFACE_AGES: tuple[str, ...] = (
    "0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70",
)
FAIRFACE_GENDERS: tuple[str, ...] = ("Male", "Female")

# Head name -> class names, in label-index order.
FAIRFACE_LABELS: dict[str, tuple[str, ...]] = {
    "race": FAIRFACE_RACES,
    "age": FAIRFACE_AGES,
    "gender": FAIRFACE_GENDERS,
}

SPLITS: tuple[str, ...] = ("train", "val", "test")
