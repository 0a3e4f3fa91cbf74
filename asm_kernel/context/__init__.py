"""Context-window machinery: transcript rebuilding and token estimation."""
