"""Per-architecture model code behind one interface (``base.Arch``).

``registry.load_arch`` picks the class for ``model.arch`` (``sd15``, ``sdxl``, ``flux``); the
shared pieces live beside it: ``sources`` (where a model comes from, load errors), ``adapters``
(peft adapters), ``tensors`` (timesteps, dtypes), ``pipelines`` (previews with the pipeline).
"""
