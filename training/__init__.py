"""Training side of the photo tagger: datasets, model factory, metrics, checkpoints, archives.

    python -m training --help                      # the training tool (the original's flags; see training.cli)
    python -m training --recipe prior --output checkpoints/default   # the default model (< 2 min, CPU)
    python -m training.evaluate --help             # score a checkpoint on a COCO-format dataset
    python -m training.import_legacy --help        # the original tool's newdata/ folder -> COCO format
    python -m training.archive --help              # package a checkpoint as model_store/tagger[-VERSION].mar

Importing this package is cheap: nothing is loaded until a function is called.
"""
