"""Benchmarks: ``micro`` (MBR, sampling and decode timings, ``sealong bench``),
``gpu_check`` (the ``hf`` engine at Llama-3.1-8B's shape on a bare CUDA machine,
with its reference JSONs) and ``tiny`` (a tokenizer built in process, for it and
the tests).

It imports the engines and the core; nothing outside ``cli`` imports it.
"""
