"""The encoder: the network, its checkpoints, batched embedding and the one classifier."""

EMBEDDING_DIM = 2048  # the embedding's dimension D, for every network (torch-free to import)
