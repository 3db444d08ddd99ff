"""The core every layer may use: errors, file-system helpers, image loading, synthetic smears."""
