"""Data loaders and environment containers shared by the dataset plugins."""
