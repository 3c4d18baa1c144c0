"""Evaluation of multimodal LLMs on generated sets (imported as ``medq_synth.eval``): tasks, backends,
parsing, confidence, metrics and reports (see docs/architecture.md)."""
