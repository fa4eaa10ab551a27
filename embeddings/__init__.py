"""Design-space enumeration, architecture graphs, graph embeddings and neighbours (the graph library)."""
