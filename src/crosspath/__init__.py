"""crosspath: several reasoning paths for one question that help each other.

LeaP inference (`crosspath.infer`), GRPO/M3PO training (`crosspath.train`) and QR-Distill /
LeaP-T distillation (`crosspath.distill`) over one generator protocol (`crosspath.backends`).
"""

__version__ = "0.1.0"
