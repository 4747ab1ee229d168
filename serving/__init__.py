"""Run the tagger stack: TorchServe (``torchserve.py``) and the gateway under gunicorn (``stack.py``)."""
