"""The ground floor: the model contract every other part shares, importing nothing of the project.

    from tagger.image import decode_image        # the one decoder: bytes -> oriented RGB image, bounded
    from tagger.labels import load_labels        # the one label vocabulary (labels.json), in output order
    from tagger.layout import DataDir            # where the runtime state lives under var/
    from tagger.meta import make_meta            # a model's metadata record; atomic writes; UTC timestamps
    from tagger.presets import eval_transform    # the one preprocessing, from a model's metadata record
    from tagger.ts_keys import read_keys         # TorchServe's token keys

Everything here is torch-free except ``presets`` (torchvision transforms), which only model code imports.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout: samples/, model_store/, checkpoints/
