"""Training: the networks, one shared training loop, the whole-field and cell trainers, the slide
model."""
