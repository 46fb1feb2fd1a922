"""Search methods: the registry of methods, loaded lazily by module path (`methods.py`), strategy specs
(`spec.py`), and one module per method (beam family, contrastive search, contrastive decoding, DoLa,
speculative decoding, CoT-decoding, DeepConf, power sampling) on the engine's primitives."""
