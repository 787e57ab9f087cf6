"""Tools that need both the export side and the deploy side, layered above both.

* :mod:`workflows.pipeline`: the demo pipeline (train or load, export, run the edge runner, compare
  with the evaluation, co-simulate in RTL);
* :mod:`workflows.agreement`: the runner's decisions against the evaluation's on held-out images;
* :mod:`workflows.deploy_bench`: ``hdsim bench deploy`` (int8 vs float ONNX vs PyTorch, decode vs
  CNN, and the runner's footprint: installed size and cold start).

Nothing in ``hdsim`` (the core), ``export`` or ``deploy`` imports this package (``tests/test_layering.py``).
"""
