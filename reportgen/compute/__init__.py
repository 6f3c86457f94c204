"""Numeric work on embeddings, free of models, files and figures: PCA (``pca``), neighbour graphs
(``neighbours``), the analyses' kernels (``kernels``) and near-duplicate images (``twins``)."""
