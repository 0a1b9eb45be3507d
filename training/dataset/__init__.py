"""The default render-vs-photo dataset: sources, extraction, rendering, normalisation, splits."""
