"""Training side of the photo tagger: datasets, model factory, metrics, checkpoints, archives.

    python -m training.default_model     # build the default model from the bundled samples (< 2 min, CPU)
    python -m training.archive --help    # package a checkpoint as model_store/tagger.mar

Importing this package is cheap: nothing is loaded until a function is called.
"""
