"""TorchServe handler for the tagger: ``tagger_handler.TaggerHandler`` on top of the pure functions in ``core``
(tensors); bytes -> image is the ground floor's one decoder, ``tagger.image``."""
