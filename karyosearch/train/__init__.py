"""Training: recipes, augmentation, the loss, class-balanced batches and the loop."""
