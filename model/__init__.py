"""The served model: what a ``.mar`` archive carries and TorchServe's handler runs, importable without training.

    from model.network import build_model, model_from_meta   # the classifier: timm backbone + head + ImageNet prior
    from model.export import export_onnx, probe_batch         # the classifier as ONNX, and the check it must pass
    from model.detector import load_detector, detect          # the COCO detector (its file SHA-checked)
    from model.fusion import fuse                             # detector scores fused with the classifier's logits

Training (``training/``) fits these parts and the handler (``handler/``) serves them; both import this package,
which imports only the ground floor (``tagger``). ``training.archive`` packs it whole into every archive.
"""
