"""Teaching SAM to refine: fine-tuning its mask decoder from a few annotated images."""
