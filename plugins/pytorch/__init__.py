"""detlite.pytorch: PyTorch trials. Importing this package never imports torch."""
