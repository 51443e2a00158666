"""Hooks of the VoIPstudio provider."""
