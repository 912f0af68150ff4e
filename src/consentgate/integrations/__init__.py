"""Adapters that put the gate where datasets already live (Hugging Face `datasets`)."""
