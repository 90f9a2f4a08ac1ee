"""Checkpoint formats: nybble's own (compressed-tensors ``pack-quantized``), GPTQ, AWQ.

* :mod:`.checkpoint` - ``nybble.save`` / ``nybble.load`` (dispatch on ``quantization_config.quant_method``)
* :mod:`.compressed_tensors`, :mod:`.gptq`, :mod:`.awq` - layouts, importers (and the GPTQ v2 exporter)
* :mod:`.loader` / :mod:`.modeling` / :mod:`.safetensors_io` - streaming, meta-device, memory-bounded loading
* :mod:`.permuted` - activation-ordered groups (``g_idx``), :mod:`.packing` - nibble orders
* :mod:`.inspect` - header-only description used by ``nybble info``
"""
