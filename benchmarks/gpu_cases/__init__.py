"""The cases of ``benchmarks/gpu_check.py``: their list and skip rules (``cases``), the tiny demo
models trained by the real trainer (``tiny``), the real-size SD1.5 U-Net trained on random
pre-encoded tensors (``real``) and the advisor's predictions for each (``advice``)."""
