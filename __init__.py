"""edgevlm: edge inference for GLM-4.xV vision-language models."""

__version__ = "0.1.0"
