"""Base models as users get them: Hugging Face Hub repos (what a run needs, its size, what is
cached, downloads with progress, sign-in for gated repos)."""
