"""Settings (pydantic-settings) and logging set-up."""
