"""decodebench: an experiment and evaluation harness for research on LLM decoding."""

__version__ = "0.1.0"
