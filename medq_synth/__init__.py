"""medq-synth: GPU degradation synthesis for medical images and MedQ-Deg style evaluation."""

__version__ = "0.1.0"


def generate(*args, **kwargs):  # noqa: ANN002, ANN003 - mirrors medq_synth.engine.generate
    """Python API of ``medq-synth generate`` (see :func:`medq_synth.engine.generate`)."""
    from .engine import generate as _generate

    return _generate(*args, **kwargs)


__all__ = ["__version__", "generate"]
