"""sena: iterative self-evolution of vision-language models (SENA, AAAI 2025)."""

__version__ = "0.1.0"
