"""Benchmarks: ``micro`` (MBR, sampling and decode timings, ``sealong bench``),
``gpu_check`` (the ``hf`` engine at Llama-3.1-8B's shape on a bare CUDA machine,
with its reference JSONs), ``gpu_train`` (the GPU check's training stage: a real
``axolotl train`` of the ORPO recipe, recorded from inside by the
``train_probe`` plugin), ``wheels`` (the wheels that stage needs, packed to
travel and installed offline) and ``tiny`` (a tokenizer built in process, for
them and the tests).

It imports the engines, the core, the Axolotl integration and ``iterate``'s
command lines; inside the package only ``cli`` imports it (Axolotl loads
``train_probe`` as a plugin).
"""
