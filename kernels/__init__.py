"""Triton kernels for the hot operators, each with a pure-torch reference (imported as
``medq_synth.kernels``). The CT projector is the first (see docs/architecture.md)."""
