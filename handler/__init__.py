"""TorchServe handler for the tagger: ``tagger_handler.TaggerHandler`` on top of the pure functions in ``core``
(tensors) and ``image`` (bytes -> image, torch-free so the gateway can share it)."""
