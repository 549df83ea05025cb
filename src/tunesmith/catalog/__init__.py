"""Base models: the bundled SmolLM2-135M-Instruct, local Hugging Face folders, GGUF files."""
