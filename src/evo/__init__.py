"""evo: improve a language model in small, audited LoRA generations, on Ray."""

__version__ = "0.1.0"
