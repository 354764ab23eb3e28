"""Search: the HDF5 store, the FAISS index, the atomic index folder and the engine on top."""
