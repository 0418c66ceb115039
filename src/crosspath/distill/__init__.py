"""Distillation from many reasoning paths: QR-Distill (generate, filter, routed multi-student
training with mutual distillation) and LeaP-T (SFT on correct LeaP traces). See docs/distill.md."""
