"""The conformance suite's training runs (``integrations/test_conformance.py``), one module per framework.

Each module has ``run(spec, callback, ready=None)``: one real training loop of one of the framework's own models
(Lightning's ``BoringModel`` and ``LightningLSTM`` demos, transformers models built from tiny configs, a
``keras.applications`` model with ``weights=None``) with the faults a :class:`~.spec.Spec` asks for. The test
runs it in its own process, or, where a real signal or an uncaught exception needs a process of its own, in a
child forked from a zygote (:mod:`.zygote`) that has imported the framework once.
"""
