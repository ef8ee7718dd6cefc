"""Evaluation of an encoder (a `dora train` checkpoint or a timm model): features, k-NN, the linear probe,
DAVIS label propagation, object discovery (CorLoc, Jaccard), mask quality against known objects, attention
pictures and the export to timm's folder format. Imports training (the model, discovery), never above it."""
